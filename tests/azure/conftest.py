"""Fixtures of the Azure adapter's tests: the replayed demo workspace, and a guard that fails
any test constructing a real Azure credential (a managed-identity probe would leave the machine)."""
from __future__ import annotations

from contextlib import contextmanager

import pytest

REAL_CREDENTIALS = ("DefaultAzureCredential", "ManagedIdentityCredential", "AzureCliCredential",
                    "EnvironmentCredential", "ClientSecretCredential", "WorkloadIdentityCredential",
                    "InteractiveBrowserCredential", "AzurePowerShellCredential", "AzureDeveloperCliCredential")


@pytest.fixture(autouse=True)
def _no_real_azure_credential(monkeypatch):
    import azure.identity

    def refuse(*args, **kwargs):
        raise AssertionError("a test constructed a real Azure credential")
    for name in REAL_CREDENTIALS:
        monkeypatch.setattr(azure.identity, name, refuse)


@pytest.fixture
def ws():
    """A fresh replayed demo workspace (``services/azure/fixtures``); ``ws.replay`` is its transport."""
    from services.azure.workspace import open_replay
    workspace = open_replay()
    yield workspace
    workspace.close()


@contextmanager
def console_on(monkeypatch, uri: str):
    """``TOLLGATE_WORKSPACE=uri`` for AppTest and the CLI, with fresh Streamlit caches before and after."""
    import streamlit as st
    monkeypatch.setenv("TOLLGATE_WORKSPACE", uri)
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        yield uri
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()


@pytest.fixture
def replay_env(monkeypatch):
    """``TOLLGATE_WORKSPACE=azure+replay://`` for AppTest and the CLI; fresh caches."""
    with console_on(monkeypatch, "azure+replay://") as uri:
        yield uri
