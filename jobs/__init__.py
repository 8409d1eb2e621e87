"""llamaq's jobs layer: job kinds (OpenAI bodies in and out), job records, and
the backends that run them: LocalBackend (in-process engine) and RedisBackend
(Redis + Celery workers, `llamaq worker`). See docs/INTERFACES.md."""
