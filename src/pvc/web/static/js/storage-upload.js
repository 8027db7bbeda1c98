/* Storage: an image upload into a new volume, with its progress (no inline script: CSP).
 * Step one posts the form's fields (not the file) to the UI's /storage/upload/volume, which
 * creates the volume as the API does; step two sends the file to the API's own upload route,
 * which the answer names, as multipart/form-data. The browser streams the file from disk, and the
 * API spools it to disk, so neither holds it in memory. Messages are set as text, never as HTML,
 * except the UI's own refusal fragment (rendered by the server with autoescape).
 */
(function () {
  "use strict";

  var meta = document.querySelector('meta[name="csrf-token"]');
  var token = meta ? meta.getAttribute("content") : null;

  function mib(bytes) {
    var size = bytes / 1048576;
    if (size >= 1024) {
      return (size / 1024).toFixed(1) + " GiB";
    }
    return size.toFixed(1) + " MiB";
  }

  function say(area, kind, text) {
    area.textContent = "";
    var p = document.createElement("p");
    p.className = "flash flash-" + kind;
    var strong = document.createElement("strong");
    strong.textContent = kind === "ok" ? "Done:" : "Error:";
    p.appendChild(strong);
    p.appendChild(document.createTextNode(" " + text));
    area.appendChild(p);
  }

  function apiMessage(xhr) {
    try {
      var body = JSON.parse(xhr.responseText);
      var message = body.message;
      if (message && typeof message === "object") {
        return Object.keys(message).map(function (k) { return k + ": " + message[k]; }).join("; ");
      }
      return String(message || xhr.statusText || "status " + xhr.status);
    } catch (e) {
      return "the upload failed (status " + xhr.status + ")";
    }
  }

  function setup(form) {
    var button = form.querySelector("#upload-start");
    var area = form.querySelector("#msg-upload");
    var box = form.querySelector("#upload-progress-box");
    var bar = form.querySelector("#upload-progress");
    var pct = form.querySelector("#upload-pct");
    var detail = form.querySelector("#upload-progress-text");
    var needs = form.querySelector("#upload-needs");
    var busy = false;
    button.disabled = false;
    if (needs) {
      needs.textContent = "The file goes to the API's upload route; the bar shows how much has been sent.";
    }

    function progress(sent, total) {
      var share = total ? Math.floor(100 * sent / total) : 0;
      bar.value = share;
      bar.textContent = share + "%";
      pct.textContent = share + "%";
      detail.textContent = mib(sent) + " of " + mib(total) + " sent";
    }

    function finish() {
      busy = false;
      button.disabled = false;
    }

    function send(file, answer) {
      var xhr = new XMLHttpRequest();
      var body = new FormData();
      body.append("file", file, file.name);
      xhr.open("POST", answer.upload);
      if (token) {
        xhr.setRequestHeader("X-CSRF-Token", token);
      }
      xhr.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable) {
          progress(event.loaded, event.total);
        }
      });
      xhr.upload.addEventListener("load", function () {
        detail.textContent = "Sent; the API is writing it into the volume…";
      });
      xhr.addEventListener("load", function () {
        if (xhr.status >= 200 && xhr.status < 300) {
          progress(file.size, file.size);
          say(area, "ok", apiMessage(xhr));
          var link = document.createElement("a");
          link.href = answer.volume;
          link.id = "upload-volume-link";
          link.textContent = "Open the volume";
          area.appendChild(link);
        } else {
          say(area, "bad", apiMessage(xhr) + " The new volume was created empty; remove it or " +
              "upload into it again from the API.");
        }
        finish();
      });
      xhr.addEventListener("error", function () {
        say(area, "bad", "The upload was interrupted (network). The new volume was created empty.");
        finish();
      });
      xhr.send(body);
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (busy) {
        return;
      }
      var file = form.querySelector("#upload-file").files[0];
      if (!file) {
        say(area, "bad", "file: choose an image file");
        return;
      }
      var fields = new FormData();
      ["pool", "volume", "image_format", "size"].forEach(function (name) {
        var input = form.elements[name];
        fields.append(name, input ? input.value : "");
      });
      if (form.elements.image_format.value === "raw") {
        fields.set("size", String(file.size));      /* a raw image fills its volume exactly */
      }
      if (form.elements.force.checked) {
        fields.append("force", "on");
      }
      busy = true;
      button.disabled = true;
      area.textContent = "";
      box.hidden = false;
      progress(0, file.size);
      detail.textContent = "Creating the volume…";
      fetch(form.getAttribute("action"), {
        method: "POST", body: fields, credentials: "same-origin",
        headers: { "X-CSRF-Token": token || "", "HX-Request": "true" }
      }).then(function (response) {
        if (response.ok) {
          return response.json().then(function (answer) { send(file, answer); });
        }
        var go = response.headers.get("HX-Redirect");
        if (go && go.charAt(0) === "/" && go.charAt(1) !== "/") {
          window.location.assign(go);          /* the session ended: the login form brings us back */
          return null;
        }
        return response.text().then(function (html) {
          /* the UI's refusal: a message fragment the server rendered with autoescape */
          area.innerHTML = html;
          box.hidden = true;
          finish();
        });
      }).catch(function () {
        say(area, "bad", "The volume could not be created (network).");
        box.hidden = true;
        finish();
      });
    });
  }

  function start() {
    document.querySelectorAll("form[data-upload]").forEach(setup);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
