"""People's text is shown as text on every page: never read as markdown, HTML, LaTeX or Streamlit's
own colour and icon syntax (a comment saying ":red[approved by admin]", an image fetched from any
URL, a heading). The strings below go in through the services, as a user would put them in; the
page's elements must carry them escaped (each markup character behind a backslash) or inside a
code span that they cannot close.
"""
from __future__ import annotations

import re
import string

import pytest

from services.local.workspace import LocalWorkspace
from tests.conftest import copy_workspace
from tests.pages.helpers import open_page
from ui.widgets import code, escaped

LEAD = "lead@contoso.com"
HOSTILE = ["**bold**", "[x](http://evil)", "![img](http://evil/x.png)", "<b>html</b>", "$x$ LaTeX",
           "`tick` and ``two``", "line\n# heading", ":red[FAKE: approved by admin] :material/lock:",
           "=1+2 - _em_ ~~strike~~ | a | b |", "text\n===", "&lt;script&gt;"]
# what a markdown reader (CommonMark, GitHub's extensions, Streamlit's directives and math) acts on
MARKUP = set("\\`*_[]()!<>#$:~|=&-+")


def as_text_pattern(text: str) -> str:
    """The regex of ``text`` shown as text in a markdown body: every markup character escaped."""
    out = []
    for ch in text:
        if ch in MARKUP:
            out.append(re.escape("\\" + ch))
        elif ch == "\n":
            out.append(r" *\n")
        elif ch in string.punctuation:   # harmless, may be escaped too
            out.append(r"\\?" + re.escape(ch))
        else:
            out.append(re.escape(ch))
    return "".join(out)


def as_code_span(body: str, text: str) -> bool:
    """``text`` (lines joined) inside a code span whose fence no run of backticks in it can close."""
    flat = " ".join(text.splitlines())
    longest = max((len(r) for r in re.findall(r"`+", flat)), default=0)
    return re.search(r"(?<!`)(`{%d,})(?!`) ?%s ?\1(?!`)" % (longest + 1, re.escape(flat)), body) is not None


def shown_as_text(body: str, text: str) -> bool:
    return re.search(as_text_pattern(text), body) is not None or as_code_span(body, text)


@pytest.mark.parametrize("text", HOSTILE)
def test_the_helpers_leave_no_markup_character_bare(text):
    assert shown_as_text(escaped(text), text)
    assert re.sub(r"\\(.)", r"\1", escaped(text)).replace("  \n", "\n") == text   # nothing lost
    assert as_code_span(code(text), text)
    assert not shown_as_text(text, text) or not (set(text) & MARKUP)   # the oracle does tell them apart


@pytest.fixture(scope="module")
def hostile_ws(demo_template, tmp_path_factory):
    """A demo copy in which a dataset version, a model version and its tag carry hostile text."""
    path = copy_workspace(demo_template, tmp_path_factory.mktemp("hostile") / "ws")
    ws = LocalWorkspace(path)
    try:
        source = tmp_path_factory.mktemp("csv") / "d.csv"
        source.write_text("a,b\n1,2\n3,4\n")
        dv = ws.datasets.register("notes", source, actor=LEAD, description=" · ".join(HOSTILE))
        mv = ws.models.versions(ws.policy.model_name)[0]
        ws.models.set_tags(mv.name, mv.version, {"stage": HOSTILE[7]}, LEAD)
    finally:
        ws.close()
    return path, dv, mv


@pytest.fixture
def hostile_env(hostile_ws, monkeypatch):
    path, _, _ = hostile_ws
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{path}")
    from streamlit import cache_data, cache_resource
    cache_data.clear()
    cache_resource.clear()
    return hostile_ws


def bodies(at, *kinds) -> list[str]:
    kinds = kinds or ("markdown", "caption", "info", "success", "warning", "error")
    return [str(e.value) for kind in kinds for e in getattr(at, kind)]


def test_a_dataset_description_is_shown_as_text(hostile_env):
    _, dv, _ = hostile_env
    at = open_page("pages/datasets.py", LEAD, {"dataset": dv.name, "version": str(dv.version)})
    caption = next(b for b in bodies(at, "caption") if "source" in b and "heading" in b)
    for text in HOSTILE:
        assert shown_as_text(caption, text), (text, caption)


def test_a_model_tag_is_shown_as_text(hostile_env):
    _, _, mv = hostile_env
    at = open_page("pages/models.py", LEAD, {"model": mv.name, "version": str(mv.version)})
    tags = next(d.value for d in at.dataframe if list(d.value.columns) == ["key", "value"])
    assert dict(zip(tags["key"], tags["value"]))["stage"] == HOSTILE[7]   # a table cell: text, never markup
    # a tag named "stage" is the registrant's, not the release stage: it is no badge
    assert not any(HOSTILE[7] in b for b in bodies(at, "markdown"))
    assert any("release stage: registered (not deployed)" in b for b in bodies(at, "markdown"))


@pytest.mark.parametrize("identity", ["`x` [x](http://evil) **me**", "![img](http://evil/x.png)@contoso.com"])
def test_an_identity_is_shown_as_text(hostile_env, identity):
    at = open_page("pages/releases.py", identity)
    shown = [b for b in bodies(at) if "evil" in b]
    assert shown and all(shown_as_text(b, identity) for b in shown), shown


def test_a_request_id_that_is_not_found_is_shown_as_text(hostile_env):
    rid = "[x](http://evil) ![i](http://evil/i.png) `tick` <b>b</b>"
    at = open_page("pages/request_lookup.py", LEAD, {"request_id": rid})
    warning = next(b for b in bodies(at, "warning") if "No request" in b)
    assert shown_as_text(warning, rid), warning
