// The eskit explorer's only script: the global log's live tail (server-sent events).
// Every value is inserted with textContent, never innerHTML: stream ids and event
// types are user data.
"use strict";

function cell(row, text, href) {
  const td = row.insertCell();
  if (href) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
  } else {
    td.textContent = text;
  }
  return td;
}

function followLiveTail(table) {
  const status = document.getElementById("live-status");
  const body = table.tBodies[0];
  const source = new EventSource(table.dataset.src);
  source.onopen = () => { status.textContent = "live"; status.className = "badge ok"; };
  source.onerror = () => { status.textContent = "reconnecting…"; status.className = "badge bad"; };
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    const row = body.insertRow(0);
    row.className = "arrived";
    row.dataset.position = event.position;
    cell(row, event.position).className = "num";
    cell(row, event.stream, event.stream_href);
    cell(row, event.version, event.href).className = "num";
    cell(row, event.undecodable ? event.type + " (undecodable)" : event.type);
    cell(row, event.timestamp.replace("T", " ").slice(0, 19));
    while (body.rows.length > 500) body.deleteRow(-1);
  };
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("live-tail");
  if (table) followLiveTail(table);
});
