"""A real Celery worker standing in for Dify's: it registers a task under the name of Dify's
default-plugin task, on Dify's `plugin` queue, and records every call it runs (one JSON line each)
in RECORD_FILE. Its broker and key prefix are Dify's settings as ext_celery.py turns them into
Celery's: CELERY_BROKER_URL and global_keyprefix = "<REDIS_KEY_PREFIX>:"."""
import json
import os

from celery import Celery

app = Celery("dify-stand-in", broker=os.environ["CELERY_BROKER_URL"])
prefix = os.environ.get("REDIS_KEY_PREFIX", "").strip()
app.conf.update(
    broker_transport_options={"global_keyprefix": f"{prefix}:"} if prefix else {},
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="tasks.install_default_plugins_task.install_default_plugins_task", queue="plugin", bind=True)
def install_default_plugins_task(self, tenant_id, plugin_ids):
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as f:
        f.write(
            json.dumps(
                {
                    "id": self.request.id,
                    "args": [tenant_id, plugin_ids],
                    "kwargs": self.request.kwargs,
                    "argsrepr": self.request.argsrepr,
                    "queue": self.request.delivery_info.get("routing_key"),
                }
            )
            + "\n"
        )
