"""How the page is laid out and coloured: its CSS, and the header's dark-mode switch.

The Chat tab's blocks carry the classes named here (`chat-layout`, `chat-side`, `chat-main`,
`chat-settings`, `source-view`); everything is local, nothing is fetched from another host.
"""

from __future__ import annotations

PHONE = 720  # px: narrower than this, the side columns go under the conversation

CSS = f"""
/* The page viewer: the page as wide as the conversation, what supports the answer under it. */
.source-view {{ flex-direction: column !important; align-items: stretch !important; }}
.source-view > * {{ width: 100% !important; max-width: 100% !important; }}
.source-view > #source-page {{ order: -1; }}
#source-page img {{ width: 100% !important; height: auto !important; max-height: none !important; }}
#source-page .image-container, #source-page .image-frame, #source-page button {{
  height: auto !important; max-height: none !important; width: 100% !important;
}}

/* The in-chat list of sources: one per line, set apart from the answer. */
#chatbot sub {{ display: block; line-height: 1.5; margin-top: 0.4em; }}

/* The header: the title, and the dark-mode switch at its right. */
#header {{ align-items: center; flex-wrap: nowrap; }}
#theme-toggle {{ flex: 0 0 auto !important; min-width: max-content !important; white-space: nowrap; }}

/* A phone: the conversation and the message box first, shorter; the side columns under them. */
@media (max-width: {PHONE}px) {{
  .chat-layout {{ flex-direction: column !important; }}
  .chat-layout > .chat-main {{ order: -1; }}
  .chat-layout > .column {{ width: 100% !important; min-width: 0 !important; }}
  #chatbot {{ height: 48vh !important; max-height: 48vh !important; min-height: 0 !important; }}
  /* The message box the whole width, Send and Stop side by side under it. */
  .chat-main .row:has(#message) {{ flex-wrap: wrap !important; gap: 6px !important; }}
  .chat-main .row:has(#message) > .form:has(#message) {{ flex: 1 1 100% !important; min-width: 100% !important; }}
  #send, #stop {{ flex: 1 1 40% !important; min-width: 0 !important; }}
  #header h2 {{ font-size: 1.1rem; margin: 0; }}
}}
"""

THEME_KEY = "localllm-theme"

# Gradio draws its dark theme under `body.dark`; the footer's setting reloads the page to switch,
# this flips the class in place (the visible chat stays) and remembers the choice.
TOGGLE_THEME = f"""
() => {{
  const dark = document.body.classList.toggle("dark");
  localStorage.setItem("{THEME_KEY}", dark ? "dark" : "light");
}}
"""

# On load: a theme chosen in the footer's settings (?__theme=) is remembered; else the one saved.
APPLY_THEME = f"""
() => {{
  const asked = new URL(window.location.href).searchParams.get("__theme");
  if (asked === "dark" || asked === "light") localStorage.setItem("{THEME_KEY}", asked);
  const saved = localStorage.getItem("{THEME_KEY}");
  if (saved === "dark") document.body.classList.add("dark");
  if (saved === "light") document.body.classList.remove("dark");
}}
"""
