"""CRM business logic: services write (`<entity>_<action>`), selectors read.

Nothing here imports `messaging_events`: handlers translate events into plain values and call these.
"""
