from config import celery_app
from harness.procfile import worker_command
from messaging_events.contract.routing import QUEUE_ORDER


def test_app_declares_the_three_queues_in_priority_order() -> None:
    names = [queue.name for queue in celery_app.conf.task_queues]
    assert names == ["high", "normal", "low"]
    assert [p.value for p in QUEUE_ORDER] == names


def test_queues_are_consumed_in_strict_priority_order() -> None:
    assert celery_app.conf.broker_transport_options["queue_order_strategy"] == "priority"


def test_delivery_is_at_least_once_and_json_only() -> None:
    conf = celery_app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_time_limit and conf.task_soft_time_limit
    assert conf.task_soft_time_limit < conf.task_time_limit


def test_tasks_are_registered_with_names_that_say_what_they_do() -> None:
    celery_app.loader.import_default_modules()
    assert "messaging_events.apply_event_batch" in celery_app.tasks


def test_the_procfile_worker_consumes_the_queues_in_the_contract_order() -> None:
    argv = worker_command()
    assert argv[argv.index("-Q") + 1] == ",".join(p.value for p in QUEUE_ORDER)
