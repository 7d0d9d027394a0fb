"""The Azure ML inference server, bound to loopback.

``python -m services.local.infsrv --entry_script score.py --model_dir DIR --port P``
is ``azmlinfsrv`` with the same arguments; the one difference is the listen
address, which azmlinfsrv hard-codes to 0.0.0.0 and a local deployment must
not use (only its gateway is meant to be reached).
"""
from __future__ import annotations

from azureml_inference_server_http import amlserver

LOOPBACK = "127.0.0.1"


def main() -> None:
    amlserver.DEFAULT_HOST = LOOPBACK  # read by amlserver.run() when it starts gunicorn
    amlserver.run()


if __name__ == "__main__":
    main()
