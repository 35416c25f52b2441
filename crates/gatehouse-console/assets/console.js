// gatehouse console: small helpers, no framework. Everything inserted into
// the page goes through textContent, never innerHTML: payloads are hostile.
(function () {
  "use strict";

  // Copy buttons: <button data-copy="element-id">.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source) return;
      var text = source.textContent;
      var done = function () {
        var label = button.textContent;
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = label; }, 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () {});
      } else {
        var area = document.createElement("textarea");
        area.value = text;
        document.body.appendChild(area);
        area.select();
        try { document.execCommand("copy"); done(); } catch (e) { /* nothing to do */ }
        document.body.removeChild(area);
      }
    });
  });

  // Forms that ask first: <form data-confirm="Really?">.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // Live tail: <table id="tail" data-stream="/console/tail/stream?...">.
  var table = document.getElementById("tail");
  if (table && window.EventSource) {
    var body = table.querySelector("tbody");
    var status = document.getElementById("tail-status");
    var cell = function (row, text, className) {
      var td = document.createElement("td");
      if (className) td.className = className;
      td.textContent = text == null ? "" : String(text);
      row.appendChild(td);
      return td;
    };
    var stream = new EventSource(table.getAttribute("data-stream"));
    stream.addEventListener("open", function () { status.textContent = "Live: waiting for events…"; });
    stream.addEventListener("error", function () { status.textContent = "Disconnected; reconnecting…"; });
    stream.addEventListener("event", function (message) {
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      var empty = document.getElementById("tail-empty");
      if (empty) empty.remove();
      var row = document.createElement("tr");
      cell(row, event.received, "mono");
      var idCell = cell(row, "", "mono");
      var link = document.createElement("a");
      link.href = "/console/events/" + encodeURIComponent(event.id);
      link.textContent = event.id;
      idCell.appendChild(link);
      cell(row, event.source);
      cell(row, event.event_type || "—");
      cell(row, event.provider_event_id || "—", "mono");
      var badgeCell = cell(row, "");
      var badge = document.createElement("span");
      badge.className = "badge " + String(event.disposition).replace(/[^a-z_]/g, "");
      badge.textContent = event.disposition;
      badgeCell.appendChild(badge);
      body.insertBefore(row, body.firstChild);
      while (body.children.length > 200) body.removeChild(body.lastChild);
      status.textContent = "Live: last event at " + event.received;
    });
  }
})();
