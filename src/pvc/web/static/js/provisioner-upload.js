/* OVA upload with a progress bar (the provisioner's OVA page; no inline script: CSP).
 * 1. POST the name and pool to the page's check URL (the upload's own checks, before any byte);
 * 2. send the file with XHR to the API's OVA upload route it names, streamed by the browser,
 *    the bar driven by the upload's progress events;
 * 3. show the API's answer in place (as text, never as markup).
 * Without scripts the form posts to the API route itself and the browser shows its answer.
 */
(function () {
  "use strict";

  var form = document.getElementById("ova-form");
  if (!form) {
    return;
  }
  var meta = document.querySelector('meta[name="csrf-token"]');
  var token = meta ? meta.getAttribute("content") : "";
  var box = document.getElementById("ova-progress-box");
  var bar = document.getElementById("ova-progress");
  var barText = document.getElementById("ova-progress-text");
  var message = document.getElementById("ova-message");
  var submit = document.getElementById("ova-submit");
  var abort = document.getElementById("ova-abort");
  var fields = ["name", "pool", "file"];
  var current = null;

  function say(kind, text, link) {
    message.hidden = false;
    message.className = "flash flash-" + kind;
    message.textContent = "";
    var strong = document.createElement("strong");
    strong.textContent = kind === "ok" ? "Done: " : "Error: ";
    message.appendChild(strong);
    message.appendChild(document.createTextNode(text));
    if (link) {
      message.appendChild(document.createTextNode(" "));
      var a = document.createElement("a");
      a.href = link;
      a.id = "ova-open";
      a.textContent = "Open it";
      message.appendChild(a);
    }
  }

  function clearErrors() {
    message.hidden = true;
    fields.forEach(function (name) {
      var error = document.getElementById("ova-" + name + "-error");
      var input = document.getElementById("ova-" + name);
      error.hidden = true;
      error.textContent = "";
      input.removeAttribute("aria-invalid");
    });
  }

  function fieldError(name, text) {
    var error = document.getElementById("ova-" + name + "-error");
    var input = document.getElementById("ova-" + name);
    if (!error) {
      say("bad", text);
      return;
    }
    error.textContent = "Refused: " + text;
    error.hidden = false;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", "ova-" + name + "-error");
    input.focus();
  }

  function busy(on) {
    submit.disabled = on;
    abort.hidden = !on;
  }

  function answerText(raw) {
    /* The API answers {"message": text} or, for bad inputs, {"message": {field: text}}. */
    try {
      var data = JSON.parse(raw);
      var text = data.message;
      if (text && typeof text === "object") {
        return Object.keys(text).map(function (k) { return k + ": " + text[k]; }).join("; ");
      }
      return String(text);
    } catch (e) {
      return raw ? raw.slice(0, 300) : "no answer";
    }
  }

  function human(bytes) {
    var units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (bytes >= 1024 && i < units.length - 1) {
      bytes /= 1024;
      i += 1;
    }
    return (i ? bytes.toFixed(1) : String(bytes)) + " " + units[i];
  }

  function send(url, next, file) {
    var xhr = new XMLHttpRequest();
    current = xhr;
    var body = new FormData();
    body.append("file", file, file.name);
    xhr.open("POST", url + "&ova_size=" + encodeURIComponent(file.size));
    if (token) {
      xhr.setRequestHeader("X-CSRF-Token", token);
    }
    box.hidden = false;
    bar.max = 100;
    bar.value = 0;
    barText.textContent = "0% of " + human(file.size);
    xhr.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable && event.total) {
        var share = Math.floor(100 * event.loaded / event.total);
        bar.value = share;
        bar.textContent = share + "%";
        barText.textContent = share + "% (" + human(event.loaded) + " of " + human(event.total) + ")";
      }
    });
    xhr.upload.addEventListener("load", function () {
      bar.value = 100;
      barText.textContent = "Sent; the cluster is writing the disks to their volumes";
    });
    xhr.addEventListener("load", function () {
      current = null;
      busy(false);
      if (xhr.status === 200) {
        barText.textContent = "Sent and stored";
        say("ok", answerText(xhr.responseText), next);
        form.reset();
      } else {
        barText.textContent = "Sent; not stored (nothing was kept)";
        say("bad", answerText(xhr.responseText));
      }
    });
    xhr.addEventListener("error", function () {
      current = null;
      busy(false);
      say("bad", "The upload failed: the connection to pvcapid was lost.");
    });
    xhr.addEventListener("abort", function () {
      current = null;
      busy(false);
      barText.textContent = "Stopped";
      say("bad", "The upload was stopped; nothing was stored.");
    });
    xhr.send(body);
  }

  abort.addEventListener("click", function () {
    if (current) {
      current.abort();
    }
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearErrors();
    var file = document.getElementById("ova-file").files[0];
    if (!file) {
      fieldError("file", "file: choose the OVA file to upload");
      return;
    }
    busy(true);
    var check = new URLSearchParams();
    check.append("name", document.getElementById("ova-name").value.trim());
    check.append("pool", document.getElementById("ova-pool").value);
    fetch(form.getAttribute("data-check"), {
      method: "POST", credentials: "same-origin", body: check,
      headers: {"X-CSRF-Token": token, "Accept": "application/json"}
    }).then(function (answer) {
      return answer.text().then(function (raw) {
        var data = null;
        try {
          data = JSON.parse(raw);
        } catch (e) {
          data = {ok: false, message: "The check failed (HTTP " + answer.status + ")."};
        }
        if (!data.ok) {
          busy(false);
          if (data.field) {
            fieldError(data.field, data.message);
          } else {
            say("bad", data.message);
          }
          return;
        }
        send(data.url, data.next, file);
      });
    }).catch(function () {
      busy(false);
      say("bad", "The check failed: the connection to pvcapid was lost.");
    });
  });
})();
