/* The PVC web UI's only script of its own (no build step, no inline script: CSP forbids it).
 * - Sends the session's CSRF token with every htmx request and every plain form post.
 * - Follows the page's live stream (server-sent events) and swaps in the fragments it sends,
 *   keeping keyboard focus and the scroll position of followed logs.
 */
(function () {
  "use strict";

  var meta = document.querySelector('meta[name="csrf-token"]');
  var token = meta ? meta.getAttribute("content") : null;

  document.addEventListener("htmx:configRequest", function (event) {
    if (token) {
      event.detail.headers["X-CSRF-Token"] = token;
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!token || !form || (form.method || "").toLowerCase() !== "post") {
      return;
    }
    if (!form.querySelector('input[name="csrf_token"]')) {
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = "csrf_token";
      input.value = token;
      form.appendChild(input);
    }
  }, true);

  function followBottom(element) {
    element.scrollTop = element.scrollHeight;
  }

  function setStatus(state, text) {
    var status = document.getElementById("live-status");
    if (status) {
      status.setAttribute("data-state", state);
      status.textContent = text;
    }
  }

  function apply(fragments) {
    var active = document.activeElement;
    var focusId = active && active.id ? active.id : null;
    var holder = null;           /* the replaced part that held the focus */
    Object.keys(fragments).forEach(function (id) {
      var element = document.getElementById(id);
      if (!element) {
        return;
      }
      if (active && active !== document.body && element.contains(active)) {
        holder = element;
      }
      var follow = element.hasAttribute("data-follow");
      var atBottom = follow &&
        element.scrollHeight - element.scrollTop - element.clientHeight < 24;
      /* The server rendered these fragments with autoescape: they hold no text as markup. */
      element.innerHTML = fragments[id];
      if (window.htmx) {
        window.htmx.process(element);
      }
      if (atBottom) {
        followBottom(element);
      }
    });
    if (holder && document.activeElement !== active) {
      /* Focus goes back to the same control, or, when it is gone (a fault just acknowledged),
         to the part that held it, so Tab carries on from there and not from the page's top. */
      var again = focusId ? document.getElementById(focusId) : null;
      if (!again) {
        holder.setAttribute("tabindex", "-1");
        again = holder;
      }
      again.focus({ preventScroll: true });
    }
  }

  function connect(url) {
    if (!window.EventSource) {
      setStatus("off", "Live updates: not supported by this browser; reload to refresh");
      return;
    }
    setStatus("connecting", "Live updates: connecting");
    var source = new EventSource(url);
    source.addEventListener("open", function () {
      setStatus("live", "Live updates: on");
    });
    source.addEventListener("fragments", function (event) {
      apply(JSON.parse(event.data));
      setStatus("live", "Live updates: on");
      if (window.performance && performance.mark && !performance.getEntriesByName("pvc-live").length) {
        performance.mark("pvc-live");          /* bench/ui.py: the page follows the cluster from here */
      }
    });
    source.addEventListener("expired", function () {
      source.close();
      window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        setStatus("off", "Live updates: lost; reloading");
        window.setTimeout(function () { window.location.reload(); }, 5000);
      } else {
        setStatus("reconnecting", "Live updates: reconnecting");
      }
    });
  }

  function start() {
    document.querySelectorAll("[data-follow]").forEach(followBottom);
    var url = document.body.getAttribute("data-live");
    if (url) {
      connect(url);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
