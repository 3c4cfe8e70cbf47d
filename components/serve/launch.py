"""`gptrecipe serve`: the deployment on an embedded Ray, HTTP on 127.0.0.1, until SIGINT/SIGTERM.

It starts a local Ray (`ray.init`), Serve's HTTP proxy on --host/--port and the deployment of
`app.deployment`; on Ctrl-C or SIGTERM it shuts Serve and Ray down again, which stops every process
it started (the proxy, the controller, the replicas, Ray's own daemons).
"""

from __future__ import annotations

import threading

from components.serve.config import ServeConfig
from components.serve.lifecycle import interrupt_on_signals


def serve_forever(
    config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000, num_cpus: int | None = None
) -> int:
    import ray
    from ray import serve

    from components.serve.app import deployment

    try:
        with interrupt_on_signals():
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING")
            # ray.init installs its own SIGTERM handler, which aborts the process: take SIGTERM back.
            with interrupt_on_signals():
                serve.start(http_options={"host": host, "port": port})
                serve.run(deployment(config), name="gptrecipe", route_prefix="/")
                name = config.model_name or config.model_dir
                print(f"serving {name} on http://{host}:{port}/v1 (Ctrl-C to stop)", flush=True)
                print(f"chat with it: gptrecipe chat --url http://{host}:{port}", flush=True)
                threading.Event().wait()  # until a signal interrupts
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        if ray.is_initialized():  # also when interrupted half-way through start-up
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
    return 0
