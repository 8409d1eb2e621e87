"""Settings come from LLAMAQ_<FIELD> environment variables, typed like the field."""

from jobs.settings import Settings


def test_from_env_reads_each_field_with_its_type(monkeypatch):
    env = {"LLAMAQ_REDIS_URL": "redis://h:1/2", "LLAMAQ_VISIBILITY_TIMEOUT": "12", "LLAMAQ_HEARTBEAT_TTL": "4.5",
           "LLAMAQ_MODEL": "/m.gguf", "LLAMAQ_THREADS": "7", "LLAMAQ_N_CTX": "", "LLAMAQ_REDIS_SOCKET_TIMEOUT": "2"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings.from_env()
    assert (s.redis_url, s.visibility_timeout, s.heartbeat_ttl) == ("redis://h:1/2", 12, 4.5)
    assert (s.model, s.threads, s.n_ctx, s.redis_socket_timeout) == ("/m.gguf", 7, None, 2.0)
    assert s.prefix == Settings().prefix and s.extra == {}
