#!/usr/bin/env python3
"""Provision Dify workspaces from a CSV or .xlsx file through dify-provision's HTTP API.

Python's standard library only (urllib): no package to install.

    export DIFY_PROVISION_URL=http://127.0.0.1:3000   # where `dify-provision dashboard` listens
    export DIFY_PROVISION_TOKEN=...                   # its DASHBOARD_TOKEN
    python3 samples/provision_client.py customers.csv [--strict] [--batch-id ID]

It uploads the file (POST /api/v1/batches, multipart), polls the batch (GET /api/v1/batches/{id}) until
every row has its answer, then prints the report, one row a line. The token is read from the
environment, never from the command line (where `ps` would show it).

Exit status: 0 every row was created or existed already; 1 some rows were rejected, failed or
cancelled (each says why); 2 the file or the request was refused (each problem with its line).
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ApiError(Exception):
    """The API's error body: { "error": { "code", "message", "rows"? } }."""

    def __init__(self, status, code, message, rows=None):
        super().__init__(message)
        self.status, self.code, self.rows = status, code, rows or []


def multipart(fields, filename, content, content_type):
    """A multipart/form-data body: the option fields, then the file in the field "file"."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (boundary, name, value)).encode("utf-8"))
    quoted = filename.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
    head = '--%s\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\nContent-Type: %s\r\n\r\n'
    parts.append((head % (boundary, quoted, content_type)).encode("utf-8") + content + b"\r\n")
    parts.append(("--%s--\r\n" % boundary).encode("ascii"))
    return b"".join(parts), "multipart/form-data; boundary=" + boundary


class Client:
    def __init__(self, url, token):
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, headers=None, accept="application/json"):
        request = urllib.request.Request(self.url + "/api/v1" + path, data=body, method=method)
        request.add_header("Authorization", "Bearer " + self.token)
        request.add_header("Accept", accept)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                text = response.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            raw = e.read().decode("utf-8", "replace")
            try:
                error = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                raise ApiError(e.code, "HTTP_%d" % e.code, raw.strip() or e.reason) from None
            raise ApiError(e.code, error.get("code"), error.get("message"), error.get("rows")) from None
        return text if accept != "application/json" else json.loads(text)

    def upload(self, path, batch_id=None, strict=False):
        """POST the file as multipart/form-data (its name and content name the batch, as the CLI's)."""
        fields = {}
        if batch_id:
            fields["batch_id"] = batch_id
        if strict:
            fields["strict"] = "true"
        with open(path, "rb") as f:
            content = f.read()
        content_type = XLSX if path.lower().endswith(".xlsx") else "text/csv"
        body, form_type = multipart(fields, os.path.basename(path), content, content_type)
        # One key for every attempt: a retry after a lost answer gets the first answer again.
        key = str(uuid.uuid4())
        for attempt in range(3):
            try:
                return self.call(
                    "POST",
                    "/batches",
                    body,
                    {"Content-Type": form_type, "Idempotency-Key": key},
                )
            except (urllib.error.URLError, ConnectionError) as e:
                if attempt == 2:
                    raise
                print("upload: %s; trying again" % e, file=sys.stderr)
                time.sleep(2)

    def wait(self, batch_id, every=1.0):
        """Polls the batch until every row has its final answer."""
        quoted = urllib.parse.quote(batch_id, safe="")
        said = None
        while True:
            status = self.call("GET", "/batches/" + quoted)
            line = "%s: %d of %d rows finished (%s)" % (batch_id, status["finished"], status["total"], status["state"])
            if status.get("advice"):
                line += ": " + status["advice"]
            if line != said:
                print(line, file=sys.stderr)
                said = line
            if status["done"]:
                return status
            time.sleep(every)

    def report(self, batch_id):
        return self.call("GET", "/batches/" + urllib.parse.quote(batch_id, safe="") + "/report")


def print_problems(rows):
    for row in rows:
        for e in row.get("errors", []):
            print("  line %d, %s: %s" % (row["line"], e["field"], e["message"]), file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description="Provision Dify workspaces from a CSV/.xlsx file over dify-provision's HTTP API.")
    parser.add_argument("file", help="the CSV or .xlsx file (the columns of samples/workspaces.csv)")
    parser.add_argument("--batch-id", help="the batch's id (default: from the file's content: the same file is the same batch)")
    parser.add_argument("--strict", action="store_true", help="if any row is invalid, queue nothing (every invalid row is listed)")
    args = parser.parse_args()
    url = os.environ.get("DIFY_PROVISION_URL", "http://127.0.0.1:3000")
    token = os.environ.get("DIFY_PROVISION_TOKEN")
    if not token:
        print("set DIFY_PROVISION_TOKEN to the dashboard's token (DASHBOARD_TOKEN)", file=sys.stderr)
        return 2
    client = Client(url, token)
    try:
        batch = client.upload(args.file, args.batch_id, args.strict)
        print(
            "batch %s: %d rows, %d queued, %d rejected" % (batch["batch_id"], batch["total"], batch["queued"], batch["rejected"]),
            file=sys.stderr,
        )
        status = client.wait(batch["batch_id"])
        report = client.report(batch["batch_id"])
    except ApiError as e:
        print("refused (%s %s): %s" % (e.status, e.code, e), file=sys.stderr)
        print_problems(e.rows)
        return 2
    except (OSError, urllib.error.URLError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    for row in report:
        answer = row["tenant_id"] if row["outcome"] in ("created", "existing") else row["error"]
        print("%d\t%s\t%s\t%s\t%s" % (row["line"], row["outcome"], row["workspace_name"] or "", row["owner_email"] or "", answer or ""))
    counts = ", ".join("%d %s" % (n, outcome) for outcome, n in status["counts"].items() if n)
    print("%s: %s" % (batch["batch_id"], counts), file=sys.stderr)
    return 0 if status["succeeded"] else 1


if __name__ == "__main__":
    sys.exit(main())
