"""The training pipeline: plain Python that runs unchanged as a local subprocess
or as an Azure ML command job (``python -m pipeline.train --data ... --output ...``).
It imports nothing from ``services`` so it can be shipped alone as job code."""
