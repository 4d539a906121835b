// The viewer's pages: circuit node panel, the unit table, the prompt page. Everything shown
// from data is set with textContent (never parsed as HTML), so no string can become markup.
"use strict";

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function readJson(id) {
  const holder = document.getElementById(id);
  return holder ? JSON.parse(holder.textContent) : null;
}

function fixed(value, digits) {
  return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "-";
}

function excerptElement(tokens, top) {
  const box = element("div", null, "excerpt");
  for (const [text, value] of tokens) {
    const span = element("span", text, "token");
    const strength = top > 0 && value > 0 ? Math.min(1, value / top) : 0;
    span.style.background = "rgba(255, 120, 0, " + strength.toFixed(3) + ")";
    span.title = fixed(value, 3);
    box.appendChild(span);
  }
  return box;
}

function showNode(panel, id, node, prompts, unitLink) {
  panel.replaceChildren();
  panel.appendChild(element("h2", id + " (" + node.kind + ")"));
  const facts = element("dl");
  const add = (term, value) => {
    facts.appendChild(element("dt", term));
    facts.appendChild(element("dd", value));
  };
  add("explanation", node.explanation || "not explained yet");
  if (node.explanation) add("explanation score", fixed(node.explanation_score, 3));
  add("task loss change when ablated alone", fixed(node.ablation_effect, 4));
  add("mean (its ablated value)", fixed(node.mean, 4));
  add("mask score", fixed(node.score, 3));
  panel.appendChild(facts);
  if (node.activations.length) {
    panel.appendChild(element("h3", "Activation at the last token of task prompts"));
    const list = element("ul", null, "activations");
    node.activations.forEach((value, i) => {
      list.appendChild(element("li", fixed(value, 3) + "  ←  …" + prompts[i].slice(-40)));
    });
    panel.appendChild(list);
  }
  if (node.top_excerpts.length) {
    panel.appendChild(element("h3", "Strongest excerpts from the corpus"));
    for (const tokens of node.top_excerpts) {
      panel.appendChild(excerptElement(tokens, node.max_activation));
    }
  }
  if (unitLink) {
    const link = element("a", "unit page");
    link.href = unitLink;
    panel.appendChild(link);
  }
}

function setUpCircuit() {
  const data = readJson("circuit-data");
  if (!data) return;
  const links = readJson("unit-links") || {};
  const panel = document.getElementById("node-panel");
  for (const group of document.querySelectorAll("#drawing g.node")) {
    group.addEventListener("click", () => {
      document.querySelectorAll("#drawing g.node.selected").forEach((g) => g.classList.remove("selected"));
      group.classList.add("selected");
      const id = group.dataset.id;
      const node = data.nodes[id];
      if (node) showNode(panel, id, node, data.prompts, links[id]);
      else panel.replaceChildren(element("p", id + ": no details (the circuit's model was not given)"));
    });
  }
}

function setUpUnits() {
  const rows = readJson("unit-rows");
  if (!rows) return;
  const perPage = 50;
  let shown = rows, page = 0, sortKey = null, descending = true;
  const body = document.querySelector("#unit-table tbody");
  const columns = [...document.querySelectorAll("#unit-table th[data-sort]")].map((th) => th.dataset.sort);
  function draw() {
    const pages = Math.max(1, Math.ceil(shown.length / perPage));
    page = Math.min(page, pages - 1);
    body.replaceChildren();
    for (const row of shown.slice(page * perPage, (page + 1) * perPage)) {
      const tr = element("tr");
      for (const column of columns) {
        const td = element("td");
        if (column === "unit") {
          const link = element("a", row.unit);
          link.href = row.href;
          td.appendChild(link);
        } else if (typeof row[column] === "number") {
          td.textContent = fixed(row[column], 3);
        } else {
          td.textContent = row[column] === null || row[column] === undefined ? "-" : row[column];
        }
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    document.getElementById("unit-count").textContent = shown.length + " shown";
    document.getElementById("page-number").textContent = "page " + (page + 1) + " of " + pages;
  }
  function filter() {
    const query = document.getElementById("unit-search").value.trim().toLowerCase();
    shown = rows.filter((row) => !query || row.unit.toLowerCase().includes(query) ||
      String(row.explanation).toLowerCase().includes(query));
    if (sortKey) {
      const sign = descending ? -1 : 1;
      shown = [...shown].sort((a, b) => {
        const x = a[sortKey], y = b[sortKey];
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * sign;
      });
    }
    page = 0;
    draw();
  }
  document.getElementById("unit-search").addEventListener("input", filter);
  for (const th of document.querySelectorAll("#unit-table th[data-sort]")) {
    th.addEventListener("click", () => {
      descending = sortKey === th.dataset.sort ? !descending : true;
      sortKey = th.dataset.sort;
      filter();
    });
  }
  document.getElementById("previous-page").addEventListener("click", () => { page = Math.max(0, page - 1); draw(); });
  document.getElementById("next-page").addEventListener("click", () => { page += 1; draw(); });
  filter();
}

function setUpPrompt() {
  const form = document.getElementById("prompt-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const output = document.getElementById("prompt-output");
    output.replaceChildren(element("p", "running…"));
    const response = await fetch(form.dataset.api, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({prompt: document.getElementById("prompt-text").value}),
    });
    const result = await response.json();
    output.replaceChildren();
    if (!response.ok) {
      output.appendChild(element("p", result.error || "error", "error"));
      return;
    }
    showPrediction(output, result);
  });
}

function showPrediction(output, result) {
  output.appendChild(element("h2", "Next token"));
  const table = element("table", null, "list");
  table.id = "next-tokens";
  for (const [text, probability] of result.next) {
    const tr = element("tr");
    tr.appendChild(element("td", JSON.stringify(text)));
    const bar = element("td");
    const fill = element("span", null, "bar");
    fill.style.width = (probability * 300).toFixed(0) + "px";
    bar.appendChild(fill);
    tr.appendChild(bar);
    tr.appendChild(element("td", fixed(probability, 4)));
    table.appendChild(tr);
  }
  output.appendChild(table);
  output.appendChild(element("h2", "Logit lens: top token at the last position after each layer"));
  const lens = element("table", null, "list");
  for (const [layer, text, probability] of result.lens) {
    const tr = element("tr");
    tr.appendChild(element("td", layer));
    tr.appendChild(element("td", JSON.stringify(text)));
    tr.appendChild(element("td", fixed(probability, 4)));
    lens.appendChild(tr);
  }
  output.appendChild(lens);
  output.appendChild(element("h2", "Strongest MLP neurons at each token"));
  const units = element("table", null, "list");
  for (const [token, fired] of result.units) {
    const tr = element("tr");
    tr.appendChild(element("td", JSON.stringify(token)));
    tr.appendChild(element("td", fired.map(([name, value]) => name + " " + fixed(value, 2)).join(", ")));
    units.appendChild(tr);
  }
  output.appendChild(units);
  output.appendChild(element("h2", "Attention (pick a layer and head; rows: query, columns: key)"));
  const pick = element("select");
  result.attention.forEach((layer, l) => layer.forEach((_, h) => {
    const option = element("option", "layer " + l + " head " + h);
    option.value = l + "," + h;
    pick.appendChild(option);
  }));
  const grid = element("table", null, "attention");
  function drawPattern() {
    const [l, h] = pick.value.split(",").map(Number);
    const pattern = result.attention[l][h];
    grid.replaceChildren();
    const head = element("tr");
    head.appendChild(element("th"));
    result.tokens.forEach((text) => head.appendChild(element("th", text)));
    grid.appendChild(head);
    pattern.forEach((row, q) => {
      const tr = element("tr");
      tr.appendChild(element("th", result.tokens[q]));
      row.forEach((value) => {
        const td = element("td", "");
        td.style.background = "rgba(37, 99, 235, " + value.toFixed(3) + ")";
        td.style.width = "14px";
        td.title = fixed(value, 3);
        tr.appendChild(td);
      });
      grid.appendChild(tr);
    });
  }
  pick.addEventListener("change", drawPattern);
  output.appendChild(pick);
  output.appendChild(grid);
  drawPattern();
}

setUpCircuit();
setUpUnits();
setUpPrompt();
