"""The frame around every page: sidebar with the workspace and who is acting."""
from __future__ import annotations

import streamlit as st

from services.policy import Policy, grant_directory_roles
from services.permissions import PERMISSIONS, SYSTEM_ACTOR, VERBS, canonical, may, roles_needed

from . import state
from .widgets import code

DEFAULT_ACTOR = "local-user"      # no role: may read everything, change nothing
SOMEONE_ELSE = "someone else…"
PICK_KEY = "tollgate.actor_pick"  # the selectbox
OTHER_KEY = "tollgate.actor_other"  # the free-text identity under "someone else…"
_WRITTEN = "tollgate.actor_written"  # what the picker last stored in state.ACTOR


def sidebar() -> None:
    ws = state.workspace()
    with st.sidebar:
        kind = "Local workspace" if ws.info.kind == "local" else "Azure ML workspace"
        st.caption(f"**{kind}**  \n{code(ws.info.description)}")
        if sign_in_configured():
            signed_in_identity(ws.policy)
        else:
            identity_picker(ws.policy)


def sign_in_configured() -> bool:
    """``st.login`` needs an ``[auth]`` section in ``.streamlit/secrets.toml`` (redirect URI,
    cookie secret, and the provider's client id/secret/metadata URL): with it, users sign in."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def token_roles(policy: Policy, claims) -> tuple[str, ...]:
    """Tollgate roles that the app roles of an ID token (``roles`` claim) map to (``[auth] app_roles``)."""
    granted = claims.get("roles") or ()
    granted = [granted] if isinstance(granted, str) else list(granted)
    return tuple(dict.fromkeys(policy.auth.app_roles[r] for r in granted if r in policy.auth.app_roles))


def signed_in_identity(policy: Policy) -> None:
    """Microsoft Entra ID sign-in: the identity is the token's e-mail (or preferred_username),
    verified by Streamlit; roles from ``[roles]`` and the token's app roles. Until then: read-only."""
    if not st.user.is_logged_in:
        st.session_state[state.ACTOR] = DEFAULT_ACTOR
        st.button("Sign in with Microsoft", icon=":material/login:", on_click=st.login,
                  args=(policy.auth.provider,), width="stretch", type="primary")
        st.caption("Signed out: read-only. Signing in records your actions under your name.")
        return
    identity = str(st.user.get("email") or st.user.get("preferred_username") or "").strip().lower()
    if not identity or identity == SYSTEM_ACTOR:
        st.error("The sign-in carried no usable e-mail or username; acting read-only.", icon="🚫")
        st.session_state[state.ACTOR] = DEFAULT_ACTOR
        return
    grant_directory_roles(identity, token_roles(policy, st.user))
    st.session_state[state.ACTOR] = identity
    roles = policy.roles_of(identity)
    st.markdown(f"**Signed in** as {code(identity)}")
    st.caption(f"Roles: **{', '.join(roles)}**" if roles else "No role: read-only.")
    st.button("Sign out", icon=":material/logout:", on_click=st.logout, width="stretch")


def refusal(policy: Policy, actor: str, action: str) -> str | None:
    """Why the service will refuse ``actor`` this ``action`` (None when it will not): the role
    needed, in words. It only explains; ``services.permissions.authorize`` decides."""
    if may(policy, actor, action):
        return None
    verb = VERBS[action]
    then = ("ask someone who has it" if sign_in_configured()
            else "pick another identity in the sidebar")
    return f"To {verb} you need the role {roles_needed(action)}: {code(actor)} will be refused — {then}."


def role_hint(action: str) -> None:
    """Beside a button (shown to everyone): a caption saying which role it needs, when the
    acting identity does not have it. The click still goes to the service, which refuses it."""
    why = refusal(state.workspace().policy, state.actor(), action)
    if why:
        st.caption(f":material/lock: {why}")


def os_user_identity(policy: Policy, identity: str) -> None:
    """``[auth] local_identity = "os-user"`` (a shared machine): no picker, the console acts as the
    operating-system user running it, as the services require."""
    st.session_state[state.ACTOR] = identity
    st.markdown(f"**Acting as** {code(identity)}")
    roles = policy.roles_of(identity)
    st.caption((f"Roles: **{', '.join(roles)}**. " if roles else "No role: read-only. ")
               + ":material/lock: The policy binds the identity to the operating-system user running the "
                 "console (`[auth] local_identity`).")


def role_label(policy: Policy, identity: str) -> str:
    roles = policy.roles_of(identity)
    return f"{identity} — {', '.join(roles) if roles else 'no role (read-only)'}"


def allowed_actions(roles: tuple[str, ...]) -> list[str]:
    """What these roles may do, in the words of the release rules."""
    return [VERBS[action] for action, allowed in PERMISSIONS.items() if set(roles) & allowed]


def identity_picker(policy: Policy) -> None:
    """Local mode has no sign-in: the user picks an identity of the policy's ``[roles]``
    (or types another); it is what the services authorize and the audit trail records."""
    bound = policy.auth.bound_identity()
    if bound is not None:
        os_user_identity(policy, bound)
        return
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
        if canonical(typed) == SYSTEM_ACTOR:
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
        st.caption(f"{code(actor)} has no role in the policy: read-only.")
    st.caption(":material/info: **No sign-in configured** — pick who you are; the choice goes into the "
               "audit trail. Roles come from `[roles]` in the policy file. For Microsoft sign-in, add "
               "`[auth]` to `.streamlit/secrets.toml` (README: Use with Azure).")
