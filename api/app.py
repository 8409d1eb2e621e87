"""The FastAPI application over a jobs Backend.

    app = create_app(LocalBackend(engine))                       # in-process
    app = create_app(RedisBackend(url), store=RedisStore(url))   # workers over Redis
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from . import contract, errors
from .batches import BatchLimits, BatchManager
from .bridge import Bridge
from .deps import ApiConfig
from .limits import KeyLimits
from .metrics import ApiMetrics, MetricsMiddleware
from .routes import batches, files, inference, jobs, ops
from .store import LocalStore, Store


@dataclass
class AppState:
    backend: object
    store: Store
    config: ApiConfig
    batch_limits: BatchLimits
    bridge: Bridge
    batches: BatchManager
    metrics: ApiMetrics
    validate: object  # jobs.kinds.validate(kind, body) -> body
    limits: KeyLimits


def create_app(backend, *, store: Store | None = None, config: ApiConfig | None = None,
               batch_limits: BatchLimits | None = None, validate=None) -> FastAPI:
    if validate is None:
        from jobs.kinds import validate
    store = store if store is not None else LocalStore()
    limits = batch_limits or BatchLimits()
    config = config or ApiConfig()
    st = AppState(backend=backend, store=store, config=config, batch_limits=limits,
                  bridge=Bridge(backend), batches=BatchManager(backend, store, validate, limits),
                  metrics=ApiMetrics(), validate=validate,
                  limits=KeyLimits(config.max_jobs_per_key, config.max_batches_per_key, config.retry_after_s))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        st.batches.start()
        try:
            yield
        finally:
            st.batches.close()
            st.bridge.close()

    app = FastAPI(title="llamaq", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible API over llamaq's job queue")
    app.state.llamaq = st
    errors.install(app)
    for module in (inference, files, batches, jobs, ops):
        app.include_router(module.router)
    app.add_middleware(MetricsMiddleware, metrics=st.metrics)
    _publish_contract(app, secured=bool(config.api_keys))
    return app


def _publish_contract(app: FastAPI, secured: bool) -> None:
    """/openapi.json as FastAPI builds it, completed by api.contract."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = contract.finish(build(), extra_models=[], secured=secured)
        return app.openapi_schema

    app.openapi = openapi
