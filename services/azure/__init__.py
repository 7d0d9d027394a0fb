"""Azure backend (azure-ai-ml, azure-monitor-query)."""
