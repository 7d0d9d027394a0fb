"""The Azure ML inference server, bound to loopback, its log lines tagged with request ids.

``python -m services.local.infsrv --entry_script score.py --model_dir DIR --port P``
is ``azmlinfsrv`` with the same arguments. Two differences:

* the listen address, which azmlinfsrv hard-codes to 0.0.0.0 and a local
  deployment must not use (only its gateway is meant to be reached);
* every line logged while a request is served (the server's ``POST /score``
  line, ``print`` output of ``score.py``, exceptions, gunicorn's access line) ends with
  `` request_id=<x-request-id>``, the id the gateway forwarded, so support can
  find a request's lines (Request lookup).
"""
from __future__ import annotations

import logging
import os
import shlex

from azureml_inference_server_http import amlserver, log_config

from .paths import private_files
from .logfmt import REQUEST_ID_SUFFIX

LOOPBACK = "127.0.0.1"
# gunicorn's default access-log format, plus the forwarded request id (gunicorn reads GUNICORN_CMD_ARGS)
ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"' + REQUEST_ID_SUFFIX + "%({x-request-id}i)s"


def _current_request_id() -> str | None:
    try:
        from flask import g, has_request_context
        return (g.get("request_id") or None) if has_request_context() else None
    except Exception:  # never let logging break serving
        return None


def _tag_request_id(format_):
    def format(self, record: logging.LogRecord) -> str:
        line = format_(self, record)
        request_id = _current_request_id()
        return f"{line}{REQUEST_ID_SUFFIX}{request_id}" if request_id else line
    return format


def main() -> None:
    private_files()   # its logs, spools and pid files: the workspace user's alone
    amlserver.DEFAULT_HOST = LOOPBACK  # read by amlserver.run() when it starts gunicorn
    os.environ["GUNICORN_CMD_ARGS"] = f"--access-logformat {shlex.quote(ACCESS_LOG_FORMAT)}"
    # The server's logging.json names this formatter class; gunicorn workers fork from this process.
    log_config.AMLLogFormatter.format = _tag_request_id(log_config.AMLLogFormatter.format)
    amlserver.run()


if __name__ == "__main__":
    main()
