"""Client commands against a running `llamaq serve` (--api URL, env LLAMAQ_API):

    llamaq submit requests.jsonl        # OpenAI batch input -> prints the batch id
    llamaq status ID                    # batch_... or job_...
    llamaq results ID -o out.jsonl      # output lines (errors to out.errors.jsonl)
    llamaq cancel ID
    llamaq jobs                         # recent batches and jobs
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import httpx
import orjson

from jobs.translation.submitters import TRANSIENT_STATUSES, ride_out

DEFAULT_API = "http://127.0.0.1:8000"
_FINAL = ("completed", "failed", "expired", "cancelled", "succeeded")


class _Away(Exception):
    """A 502/503/504: the API or the Redis behind it is away for now."""

    def __init__(self, response: httpx.Response):
        self.response = response


class Api:
    def __init__(self, url: str, key: str | None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=120)

    def call(self, method: str, path: str, outage_s: float = 0, **kw):
        """outage_s: ask again through an API restart or a Redis outage behind it
        (no connection, 502/503/504) for this long (for reads only)."""
        def once() -> httpx.Response:
            r = self.http.request(method, path, **kw)
            if r.status_code in TRANSIENT_STATUSES:
                raise _Away(r)
            return r

        try:
            r = ride_out(once, outage_s, lambda e: isinstance(e, (_Away, httpx.HTTPError)))
        except _Away as e:  # still away at the deadline: its answer is the error
            r = e.response
        except httpx.HTTPError as e:
            raise click.ClickException(f"cannot reach the API at {self.http.base_url}: {e}") from None
        if r.status_code >= 400:
            try:
                msg = r.json()["error"]["message"]
            except Exception:
                msg = r.text[:500]
            raise click.ClickException(f"{r.status_code}: {msg}")
        return r


api_option = click.option("--api", "api_url", envvar="LLAMAQ_API", default=DEFAULT_API, show_default=True,
                          help="The llamaq API (env LLAMAQ_API).")
key_option = click.option("--api-key", envvar="LLAMAQ_API_KEY", default=None, help="Bearer key (env LLAMAQ_API_KEY).")


def _endpoint_of(path: Path) -> str:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                try:
                    url = orjson.loads(line).get("url")
                except (orjson.JSONDecodeError, AttributeError):
                    break
                if isinstance(url, str):
                    return url
                break
    raise click.ClickException(f"{path}: the first line has no \"url\"; pass --endpoint")


@click.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--endpoint", default=None, help="Default: the url of the file's first line.")
@click.option("--metadata", "-m", multiple=True, help="KEY=VALUE, repeatable.")
@click.option("--wait", is_flag=True, help="Poll until the batch finishes.")
@api_option
@key_option
def submit(file, endpoint, metadata, wait, api_url, api_key):
    """Upload an OpenAI batch input file (JSONL) and start a batch; print its id."""
    api = Api(api_url, api_key)
    endpoint = endpoint or _endpoint_of(file)
    with file.open("rb") as f:
        uploaded = api.call("POST", "/v1/files", files={"file": (file.name, f, "application/jsonl")},
                            data={"purpose": "batch"}).json()
    meta = dict(kv.split("=", 1) for kv in metadata) or None
    batch = api.call("POST", "/v1/batches", json={"input_file_id": uploaded["id"], "endpoint": endpoint,
                                                  "completion_window": "24h", "metadata": meta}).json()
    click.echo(batch["id"])
    if wait:
        _wait(api, batch["id"])


WAIT_OUTAGE_S = 300  # --wait keeps polling through an API or Redis outage this long


def _wait(api: Api, batch_id: str) -> dict:
    while True:
        b = api.call("GET", f"/v1/batches/{batch_id}", outage_s=WAIT_OUTAGE_S).json()
        c = b["request_counts"]
        click.echo(f"{b['status']}: {c['completed']} done, {c['failed']} failed of {c['total']}", err=True)
        if b["status"] in _FINAL:
            return b
        time.sleep(2)


def _get(api: Api, id_: str) -> dict:
    if id_.startswith("batch_"):
        return api.call("GET", f"/v1/batches/{id_}").json()
    return api.call("GET", f"/v1/jobs/{id_}").json()


@click.command("status")
@click.argument("id_", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The full object as JSON.")
@api_option
@key_option
def status(id_, as_json, api_url, api_key):
    """Status of a batch (batch_...) or a job (job_...)."""
    obj = _get(Api(api_url, api_key), id_)
    if as_json:
        click.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())
        return
    if obj.get("object") == "batch":
        c = obj["request_counts"]
        click.echo(f"{obj['id']}  {obj['status']}  {c['completed']} completed, {c['failed']} failed, "
                   f"{c['total']} total")
        for err in (obj.get("errors") or {}).get("data") or []:
            click.echo(f"  error: {err.get('message')}")
    else:
        click.echo(f"{obj['id']}  {obj['kind']}  {obj['status']}")
        if obj.get("error"):
            click.echo(f"  error: {obj['error'].get('message')}")


@click.command("results")
@click.argument("id_", metavar="ID")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here (default: stdout). A batch's error lines go to OUTPUT.errors.jsonl.")
@api_option
@key_option
def results(id_, output, api_url, api_key):
    """Download a finished batch's output lines, or a job's result."""
    api = Api(api_url, api_key)
    obj = _get(api, id_)
    if obj.get("object") == "batch":
        if obj["status"] not in _FINAL:
            raise click.ClickException(f"batch {id_} is {obj['status']}; results come when it finishes")
        data = api.call("GET", f"/v1/files/{obj['output_file_id']}/content").content if obj["output_file_id"] else b""
        _write(output, data)
        if obj.get("error_file_id"):
            errors = api.call("GET", f"/v1/files/{obj['error_file_id']}/content").content
            err_path = output.with_suffix(".errors.jsonl") if output else None
            _write(err_path, errors, err=True)
            n_errors = errors.count(b"\n")
            click.echo(f"{n_errors} error lines -> {err_path or 'stderr'}", err=True)
        return
    if obj["status"] not in _FINAL:
        raise click.ClickException(f"job {id_} is {obj['status']}")
    payload = obj["result"] if obj["status"] == "succeeded" else {"error": obj.get("error")}
    _write(output, orjson.dumps(payload) + b"\n")


def _write(path: Path | None, data: bytes, err: bool = False) -> None:
    if path is None:
        (sys.stderr if err else sys.stdout).buffer.write(data)
    else:
        path.write_bytes(data)


@click.command("cancel")
@click.argument("id_", metavar="ID")
@api_option
@key_option
def cancel(id_, api_url, api_key):
    """Cancel a batch or a job."""
    api = Api(api_url, api_key)
    if id_.startswith("batch_"):
        obj = api.call("POST", f"/v1/batches/{id_}/cancel").json()
    else:
        obj = api.call("POST", f"/v1/jobs/{id_}/cancel").json()
    click.echo(f"{obj['id']}  {obj['status']}")


@click.command("jobs")
@click.option("--limit", default=20, show_default=True, type=int)
@api_option
@key_option
def jobs(limit, api_url, api_key):
    """Recent batches and jobs."""
    api = Api(api_url, api_key)
    batches = api.call("GET", "/v1/batches", params={"limit": min(limit, 100)}).json()["data"]
    singles = api.call("GET", "/v1/jobs", params={"limit": limit}).json()["data"]
    rows = [(b["created_at"], b["id"], "batch " + b["endpoint"], b["status"],
             f"{b['request_counts']['completed']}+{b['request_counts']['failed']}/{b['request_counts']['total']}")
            for b in batches]
    rows += [(j["created_at"], j["id"], j["kind"], j["status"], "") for j in singles]
    rows.sort(reverse=True)
    if not rows:
        click.echo("no batches or jobs yet")
        return
    click.echo(f"{'ID':34} {'WHEN':19} {'WHAT':28} {'STATUS':12} DONE/TOTAL")
    for created, id_, what, st, counts in rows[:limit]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
        click.echo(f"{id_:34} {when:19} {what:28} {st:12} {counts}")


commands = [submit, status, results, cancel, jobs]
