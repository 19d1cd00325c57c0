"""A small Sphinx extension for the book (listed in ``_config.yml``): fixes that keep its pages free of console
errors in the browser, which the browser test checks.

- The theme's FontAwesome script replaces every ``<i class="fa ...">`` with an ``<svg>``; the widget manager's
  play button looks its ``<i>`` up again on every click and fails. ``autoReplaceSvg: "nest"`` keeps the ``<i>``.
- The widget manager typesets widget labels with MathJax 2's API (``MathJax.Hub.Queue``); the book loads
  MathJax 3, so on pages with both, ``MathJax.Hub.Queue`` is mapped onto MathJax 3's ``typesetPromise``.
- sphinx-thebe adds its inline configuration script twice under this Sphinx (``const`` declared twice is a
  page error); identical scripts are kept once.
"""

from __future__ import annotations

FONTAWESOME_CONFIG = 'window.FontAwesomeConfig = {autoReplaceSvg: "nest"};'
# widgets render on window "load"; MathJax 3 (deferred) has run by DOMContentLoaded
MATHJAX2_QUEUE = """document.addEventListener("DOMContentLoaded", () => {
  const mathjax = window.MathJax;
  if (mathjax && !mathjax.Hub) {
    mathjax.Hub = {Queue: (command) => mathjax.startup.promise.then(() => mathjax.typesetPromise([command[2]]))};
  }
});"""


def _keep_each_script_once(app, pagename, templatename, context, doctree) -> None:
    seen, kept = set(), []
    for script in context.get("script_files", []):
        # the same inline script arrives once with filename None and once with ""
        identity = (getattr(script, "filename", script) or "", tuple(sorted(getattr(script, "attributes", {}).items())))
        if identity not in seen:
            seen.add(identity)
            kept.append(script)
    context["script_files"][:] = kept  # in place: later handlers add theirs to this same list


def setup(app) -> dict:
    app.add_js_file(None, body=FONTAWESOME_CONFIG, priority=100)  # before the theme's deferred scripts run
    app.add_js_file(None, body=MATHJAX2_QUEUE)
    # first: a handler that returns a template name stops the event before later ones run
    app.connect("html-page-context", _keep_each_script_once, priority=1)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
