"""The Messaging service's event contract: types, priorities, payload schemas and job parsing."""
