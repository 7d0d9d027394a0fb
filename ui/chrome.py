"""The frame around every page: sidebar with the workspace and who is acting."""
from __future__ import annotations

import streamlit as st

from services.policy import Policy
from services.release_rules import PERMISSIONS, SYSTEM_ACTOR, VERBS

from . import state

DEFAULT_ACTOR = "local-user"      # no role: may read everything, change nothing
SOMEONE_ELSE = "someone else…"
PICK_KEY = "tollgate.actor_pick"  # the selectbox
OTHER_KEY = "tollgate.actor_other"  # the free-text identity under "someone else…"
_WRITTEN = "tollgate.actor_written"  # what the picker last stored in state.ACTOR


def sidebar() -> None:
    ws = state.workspace()
    with st.sidebar:
        kind = "Local workspace" if ws.info.kind == "local" else "Azure ML workspace"
        st.caption(f"**{kind}**  \n`{ws.info.description}`")
        if ws.info.kind == "local":
            identity_picker(ws.policy)


def role_label(policy: Policy, identity: str) -> str:
    roles = policy.roles_of(identity)
    return f"{identity} — {', '.join(roles) if roles else 'no role (read-only)'}"


def allowed_actions(roles: tuple[str, ...]) -> list[str]:
    """What these roles may do, in the words of the release rules."""
    return [VERBS[action] for action, allowed in PERMISSIONS.items() if set(roles) & allowed]


def identity_picker(policy: Policy) -> None:
    """Local mode has no sign-in: the user picks an identity of the policy's ``[roles]``
    (or types another); it is what the services authorize and the audit trail records."""
    identities = sorted(policy.roles)
    options = [DEFAULT_ACTOR, *(i for i in identities if i != DEFAULT_ACTOR), SOMEONE_ELSE]
    current = st.session_state.get(state.ACTOR) or DEFAULT_ACTOR
    if PICK_KEY not in st.session_state or st.session_state.get(_WRITTEN) != current:
        # first run, or someone else (a test, a link) set the actor: show that choice
        known = current.strip().lower() in options
        st.session_state[PICK_KEY] = current.strip().lower() if known else SOMEONE_ELSE
        if not known:
            st.session_state[OTHER_KEY] = current

    st.markdown("**Acting as**")
    pick = st.selectbox("Acting as", options, key=PICK_KEY, label_visibility="collapsed",
                        format_func=lambda o: o if o == SOMEONE_ELSE else role_label(policy, o))
    actor = pick
    if pick == SOMEONE_ELSE:
        typed = st.text_input("Your identity (e-mail)", key=OTHER_KEY, placeholder=DEFAULT_ACTOR).strip()
        if typed.lower() == SYSTEM_ACTOR:
            st.error(f"`{SYSTEM_ACTOR}` is reserved for Tollgate itself.", icon="🚫")
            typed = ""
        actor = typed or DEFAULT_ACTOR
    st.session_state[state.ACTOR] = actor
    st.session_state[_WRITTEN] = actor

    roles = policy.roles_of(actor)
    if roles:
        allowed = allowed_actions(roles)
        st.caption(f"Roles: **{', '.join(roles)}** — "
                   + (f"may {', '.join(allowed)}." if allowed else "may read everything and change nothing."))
    else:
        st.caption(f"`{actor}` has no role in the policy: read-only.")
    st.caption(":material/info: **Local mode: no sign-in** — pick who you are; the choice goes into the "
               "audit trail. Roles come from `[roles]` in the policy file.")
