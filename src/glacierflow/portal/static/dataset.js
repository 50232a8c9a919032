/* glacierflow data portal: the dataset page's map, year selector and time-series plot.
 * Plain JavaScript over the bundled Leaflet; reads its configuration from #map-config. */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var DAY_MS = 86400000;
  var cfg = JSON.parse(document.getElementById("map-config").textContent);
  var items = {};
  cfg.items.forEach(function (it) { items[it.id] = it; });
  var state = { map: null, layer: null, current: null, marker: null, lastPoint: null, lastData: null };
  window.glacierflowPortal = state; // for tests and for the curious

  function el(id) { return document.getElementById(id); }

  function svgNode(name, attrs, parent, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function fmtCoord(value, pos, neg) {
    return Math.abs(value).toFixed(4) + "\u00b0 " + (value >= 0 ? pos : neg);
  }

  function fmtDeg(value, digits, pos, neg) {
    var rounded = Number(value.toFixed(digits));
    return Math.abs(rounded).toFixed(digits) + "\u00b0" + (rounded === 0 ? "" : " " + (rounded > 0 ? pos : neg));
  }

  function fmtNum(value, digits) {
    return value === null || value === undefined ? "\u2013" : Number(value).toFixed(digits);
  }

  // ------------------------------------------------------------------ map
  var map = L.map("map", {
    zoomSnap: 0.25, zoomDelta: 0.5, minZoom: 2, maxZoom: 17, fadeAnimation: false });
  state.map = map;
  map.attributionControl.setPrefix(false);
  map.attributionControl.addAttribution("Speed: glacierflow \u00b7 Map: Leaflet");
  L.control.scale({ imperial: false, position: "bottomleft" }).addTo(map);
  var b = cfg.bbox;
  map.fitBounds(L.latLngBounds([b[1], b[0]], [b[3], b[2]]), { padding: [24, 24] });

  // A light graticule: there is no base map (the portal works offline), so lines give place.
  var graticule = L.layerGroup().addTo(map);
  function drawGraticule() {
    graticule.clearLayers();
    var bb = map.getBounds();
    var span = Math.max(bb.getEast() - bb.getWest(), bb.getNorth() - bb.getSouth());
    var steps = [30, 20, 10, 5, 2, 1, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01, 0.005];
    var step = steps.filter(function (s) { return span / s >= 3; })[0] || 0.005;
    var digits = step >= 1 ? 0 : step >= 0.1 ? 1 : step >= 0.01 ? 2 : 3;
    var style = { color: "#9fb0bf", weight: 0.8, opacity: 0.8, interactive: false };
    var i, first, value;
    function label(text, latlng, anchor) {
      L.marker(latlng, { interactive: false, keyboard: false, icon: L.divIcon({
        className: "grat-label", html: text, iconSize: null, iconAnchor: anchor }) }).addTo(graticule);
    }
    first = Math.ceil(bb.getWest() / step);
    for (i = first; i * step <= bb.getEast(); i++) {
      value = i * step;
      L.polyline([[bb.getSouth(), value], [bb.getNorth(), value]], style).addTo(graticule);
      label(fmtDeg(value, digits, "E", "W"), [bb.getNorth(), value], [-3, -3]);
    }
    first = Math.ceil(bb.getSouth() / step);
    for (i = first; i * step <= bb.getNorth(); i++) {
      value = i * step;
      L.polyline([[value, bb.getWest()], [value, bb.getEast()]], style).addTo(graticule);
      label(fmtDeg(value, digits, "N", "S"), [value, bb.getWest()], [-4, 14]);
    }
  }
  map.on("moveend", drawGraticule);
  drawGraticule();

  // Base layers made from the data (the reference image, a DEM's hillshade), under the speed.
  map.createPane("base").style.zIndex = 150;
  var bases = {}, overlays = {};
  (cfg.base_layers || []).forEach(function (bl, i) {
    var layer = L.tileLayer(bl.tiles, { pane: "base", tileSize: 256, maxZoom: 17, keepBuffer: 1,
      bounds: L.latLngBounds([b[1], b[0]], [b[3], b[2]]).pad(0.1) });
    layer.on("load", function () { document.body.setAttribute("data-base-loaded", bl.key); });
    bases[bl.title] = layer;
    if (i === 0) { layer.addTo(map); state.base = layer; }
  });

  // Flow direction: arrows on valid nodes, thinned to one per ARROW_CELL_PX screen cell.
  var ARROW_CELL_PX = 34, ARROW_COLOR = "#ff2a6d";
  var arrowRenderer = L.canvas({ padding: 0.2 });
  var arrows = L.layerGroup().addTo(map);
  state.arrows = arrows;
  overlays["Flow direction"] = arrows;
  state.arrowData = null;

  function drawArrows() {
    arrows.clearLayers();
    var data = state.arrowData;
    if (!data || !map.hasLayer(arrows)) { return; }
    var vmax = cfg.legend.stops[cfg.legend.stops.length - 1].value || 1;
    var view = map.getBounds().pad(0.1), seen = {}, drawn = 0;
    data.features.forEach(function (f) {
      var c = f.geometry.coordinates, ll = L.latLng(c[1], c[0]);
      if (!view.contains(ll)) { return; }
      var p = map.latLngToLayerPoint(ll);
      var cell = Math.floor(p.x / ARROW_CELL_PX) + ":" + Math.floor(p.y / ARROW_CELL_PX);
      if (seen[cell]) { return; }
      seen[cell] = true;
      var len = ARROW_CELL_PX * 0.8 * (0.35 + 0.65 * Math.min(f.properties.v / vmax, 1));
      var rad = f.properties.bearing * Math.PI / 180, ux = Math.sin(rad), uy = -Math.cos(rad);
      var tail = L.point(p.x - ux * len / 2, p.y - uy * len / 2);
      var tip = L.point(p.x + ux * len / 2, p.y + uy * len / 2);
      var head = Math.max(4, len * 0.35), a = 0.45;
      function side(sign) {
        var ca = Math.cos(sign * a), sa = Math.sin(sign * a);
        return L.point(tip.x - head * (ux * ca - uy * sa), tip.y - head * (uy * ca + ux * sa));
      }
      var pts = [[tail, tip], [side(1), tip, side(-1)]].map(function (line) {
        return line.map(function (q) { return map.layerPointToLatLng(q); });
      });
      L.polyline(pts, { renderer: arrowRenderer, color: "#1d1d1d", weight: 4, opacity: 0.55,
        interactive: false, lineCap: "round" }).addTo(arrows);
      L.polyline(pts, { renderer: arrowRenderer, color: ARROW_COLOR, weight: 2, opacity: 1,
        interactive: false, lineCap: "round" }).addTo(arrows);
      drawn += 1;
    });
    document.body.setAttribute("data-arrows", String(drawn));
  }
  map.on("zoomend moveend overlayadd", drawArrows);

  function loadArrows(it) {
    state.arrowData = null;
    arrows.clearLayers();
    if (!it.arrows) { return; }
    fetch(it.arrows, { headers: { Accept: "application/geo+json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (state.current !== it.id) { return; }
        state.arrowData = data;
        drawArrows();
      });
  }

  var footprints = L.geoJSON(null, { interactive: false, style: footprintStyle }).addTo(map);
  cfg.items.forEach(function (it) {
    if (it.geometry) {
      footprints.addData({ type: "Feature", properties: { id: it.id }, geometry: it.geometry });
    }
  });
  function footprintStyle(feature) {
    return feature.properties.id === state.current
      ? { color: "#c0392b", weight: 2, fill: false }
      : { color: "#56697a", weight: 1, dashArray: "4 4", fill: false };
  }

  function showItem(id) {
    var it = items[id];
    if (!it || !it.tiles) { return; }
    state.current = id;
    document.body.setAttribute("data-tiles-loaded", "");
    if (state.layer) { map.removeLayer(state.layer); }
    var layerBounds = it.geometry ? L.geoJSON(it.geometry).getBounds() : null;
    state.layer = L.tileLayer(it.tiles, {
      tileSize: 256, maxZoom: 17, opacity: 0.95, bounds: layerBounds, keepBuffer: 1,
    });
    state.layer.on("load", function () { document.body.setAttribute("data-tiles-loaded", id); });
    state.layer.addTo(map);
    loadArrows(it);
    footprints.setStyle(footprintStyle);
    document.querySelectorAll("tr[data-item]").forEach(function (row) {
      row.classList.toggle("current", row.getAttribute("data-item") === id);
    });
    if (state.lastData) { drawSeries(state.lastData); }
  }

  overlays["Graticule"] = graticule;
  L.control.layers(bases, overlays, { position: "topright", collapsed: false }).addTo(map);

  var select = el("layer-select");
  select.addEventListener("change", function () { showItem(select.value); });
  var latest = cfg.items.filter(function (it) { return it.available && it.tiles; }).pop();
  if (latest) {
    select.value = latest.id; // items come in time order: start with the most recent
    showItem(latest.id);
  } else {
    select.disabled = true;
  }

  // ------------------------------------------------------------------ time series
  map.on("click", function (e) { queryPoint(e.latlng.wrap()); });

  function queryPoint(latlng) {
    var lon = latlng.lng, lat = latlng.lat;
    if (state.marker) { state.marker.setLatLng(latlng); }
    else {
      state.marker = L.circleMarker(latlng, {
        radius: 6, color: "#111", weight: 2, fillColor: "#f0a202", fillOpacity: 1 }).addTo(map);
    }
    state.lastPoint = { lon: lon, lat: lat };
    var query = "?lon=" + lon.toFixed(6) + "&lat=" + lat.toFixed(6);
    el("plot").setAttribute("data-state", "loading");
    fetch(cfg.point_url + query, { headers: { Accept: "application/json" } })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (res) {
        if (!res.ok) { throw new Error(JSON.stringify(res.body.detail || res.body)); }
        state.lastData = res.body;
        drawSeries(res.body);
        var csv = el("csv-link");
        csv.href = cfg.point_url + query + "&format=csv";
        csv.classList.remove("hidden");
      })
      .catch(function (err) {
        el("plot").innerHTML = "";
        var p = document.createElement("p");
        p.className = "bad";
        p.textContent = "The time series could not be loaded: " + err.message;
        el("plot").appendChild(p);
        el("plot").setAttribute("data-state", "error");
      });
  }

  function niceStep(range, count) {
    var raw = range / Math.max(count, 1);
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) { if (steps[i] * power >= raw) { return steps[i] * power; } }
    return 10 * power;
  }

  function timeTicks(t0, t1) {
    var ticks = [], d = new Date(t0), months;
    var spanDays = (t1 - t0) / DAY_MS;
    months = spanDays > 5 * 365 ? 24 : spanDays > 2 * 365 ? 12 : spanDays > 300 ? 3 : spanDays > 90 ? 1 : 0;
    if (months === 0) {
      var stepDays = spanDays > 40 ? 14 : 7;
      d = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1));
      for (; d.getTime() <= t1; d = new Date(d.getTime() + stepDays * DAY_MS)) {
        ticks.push({ t: d.getTime(), label: d.toISOString().slice(0, 10) });
      }
      return ticks;
    }
    d = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1));
    for (; d.getTime() <= t1; d = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1))) {
      if ((d.getUTCFullYear() * 12 + d.getUTCMonth()) % months === 0) {
        ticks.push({ t: d.getTime(), label: months >= 12 ? String(d.getUTCFullYear()) : d.toISOString().slice(0, 7) });
      }
    }
    return ticks;
  }

  function drawSeries(data) {
    var plot = el("plot");
    plot.innerHTML = "";
    var pts = data.series.filter(function (s) { return s.v !== null && s.mid; });
    plot.setAttribute("data-points", String(pts.length));
    plot.setAttribute("data-state", "done");
    var where = fmtCoord(data.lat, "N", "S") + ", " + fmtCoord(data.lon, "E", "W");
    if (!pts.length) {
      var p = document.createElement("p");
      p.className = "muted";
      p.textContent = data.series.length
        ? "No valid measurement at " + where + " in any product (gaps in the data there)."
        : "No product covers " + where + ". Click inside a footprint.";
      plot.appendChild(p);
      el("series-table-wrap").innerHTML = "";
      return;
    }
    var W = 780, H = 300, m = { l: 64, r: 20, t: 30, b: 42 };
    var t0 = Math.min.apply(null, pts.map(function (s) { return Date.parse(s.start); }));
    var t1 = Math.max.apply(null, pts.map(function (s) { return Date.parse(s.end); }));
    var pad = Math.max((t1 - t0) * 0.06, 10 * DAY_MS);
    t0 -= pad; t1 += pad;
    var top = Math.max.apply(null, pts.map(function (s) { return s.v + (s.v_error || 0); }));
    var yStep = niceStep(top * 1.1 || 1, 5), yMax = Math.ceil((top * 1.1 || 1) / yStep) * yStep;
    function X(t) { return m.l + (t - t0) / (t1 - t0) * (W - m.l - m.r); }
    function Y(v) { return H - m.b - v / yMax * (H - m.t - m.b); }

    var svg = svgNode("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "Speed through time at " + where });
    svgNode("text", { x: m.l, y: 16, "class": "title" }, svg, "Speed at " + where);
    var grid = svgNode("g", { "class": "grid" }, svg);
    var axis = svgNode("g", { "class": "axis" }, svg);
    for (var v = 0; v <= yMax + 1e-9; v += yStep) {
      svgNode("line", { x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v) }, grid);
      svgNode("text", { x: m.l - 8, y: Y(v) + 4, "text-anchor": "end" }, svg, String(Math.round(v * 100) / 100));
    }
    timeTicks(t0, t1).forEach(function (tick) {
      svgNode("line", { x1: X(tick.t), x2: X(tick.t), y1: H - m.b, y2: H - m.b + 5 }, axis);
      svgNode("text", { x: X(tick.t), y: H - m.b + 18, "text-anchor": "middle" }, svg, tick.label);
    });
    svgNode("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }, axis);
    svgNode("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }, axis);
    svgNode("text", { x: 14, y: (H - m.b + m.t) / 2, transform: "rotate(-90 14 " + (H - m.b + m.t) / 2 + ")",
      "text-anchor": "middle" }, svg, "Speed (m/yr)");
    var pairs = pts.filter(function (s) { return s.kind === "pair"; });
    var series = pts.filter(function (s) { return s.kind !== "pair"; });
    var kinds = series.map(function (s) { return s.kind; }).filter(function (k, i, all) { return all.indexOf(k) === i; });
    svgNode("text", { x: W - m.r, y: H - 6, "text-anchor": "end" }, svg,
      (pairs.length ? "segments: each image pair over its time span" : "") +
      (pairs.length && series.length ? "; " : "") +
      (series.length ? "dots: " + kinds.join(", ") + " series" : "") + "; whiskers: \u00b1 error");

    // each pair: its speed over its span (reference to secondary date), under the series
    pairs.forEach(function (s) {
      var g = svgNode("g", { "data-item": s.item_id, "class": "pair" + (s.item_id === state.current ? " current" : "") }, svg);
      var x0 = X(Date.parse(s.start)), x1 = X(Date.parse(s.end)), y = Y(s.v);
      if (s.v_error !== null && s.v_error !== undefined) {
        var xm = (x0 + x1) / 2;
        svgNode("line", { "class": "err", x1: xm, x2: xm, y1: Y(Math.max(s.v - s.v_error, 0)), y2: Y(s.v + s.v_error) }, g);
      }
      var seg = svgNode("line", { "class": "pair-span", x1: x0, x2: Math.max(x1, x0 + 2), y1: y, y2: y }, g);
      svgNode("line", { "class": "pair-end", x1: x0, x2: x0, y1: y - 4, y2: y + 4 }, g);
      svgNode("line", { "class": "pair-end", x1: x1, x2: x1, y1: y - 4, y2: y + 4 }, g);
      svgNode("title", {}, seg, s.label + ": " + s.v.toFixed(1) + " m/yr");
    });

    if (series.length > 1) {
      svgNode("polyline", { "class": "line", points: series.map(function (s) {
        return X(Date.parse(s.mid)) + "," + Y(s.v); }).join(" ") }, svg);
    }
    series.forEach(function (s) {
      var g = svgNode("g", { "data-item": s.item_id }, svg);
      svgNode("line", { "class": "span", x1: X(Date.parse(s.start)), x2: X(Date.parse(s.end)), y1: Y(s.v), y2: Y(s.v) }, g);
      if (s.v_error !== null && s.v_error !== undefined) {
        var xm = X(Date.parse(s.mid));
        svgNode("line", { "class": "err", x1: xm, x2: xm, y1: Y(Math.max(s.v - s.v_error, 0)), y2: Y(s.v + s.v_error) }, g);
      }
      var c = svgNode("circle", { "class": "pt" + (s.item_id === state.current ? " current" : ""),
        cx: X(Date.parse(s.mid)), cy: Y(s.v), r: s.item_id === state.current ? 6 : 5 }, g);
      svgNode("title", {}, c, s.label + ": " + s.v.toFixed(1) + " m/yr");
    });
    plot.appendChild(svg);

    var rows = data.series.map(function (s) {
      return "<tr" + (s.item_id === state.current ? ' class="current"' : "") + "><td></td><td></td>" +
        '<td class="num">' + fmtNum(s.v, 1) + '</td><td class="num">' + fmtNum(s.vx, 1) +
        '</td><td class="num">' + fmtNum(s.vy, 1) + '</td><td class="num">' + fmtNum(s.v_error, 1) + "</td></tr>";
    });
    var wrap = el("series-table-wrap");
    wrap.innerHTML = '<table class="table series-table"><thead><tr><th>Product</th><th>Time frame</th>' +
      '<th class="num">Speed</th><th class="num">v<sub>x</sub> (east)</th><th class="num">v<sub>y</sub> (north)</th>' +
      '<th class="num">\u00b1 error</th></tr></thead><tbody>' + rows.join("") + "</tbody></table>" +
      '<p class="caption">Values in m/yr, read from the pixel under the marker (no interpolation).</p>';
    var cells = wrap.querySelectorAll("tbody tr");
    data.series.forEach(function (s, i) {
      cells[i].children[0].textContent = s.label;
      cells[i].children[1].textContent = s.start.slice(0, 10) + " \u2013 " + s.end.slice(0, 10);
    });
  }

  // ------------------------------------------------------------------ citation
  var copy = el("copy-citation");
  if (copy) {
    copy.addEventListener("click", function () {
      var text = el("citation-text").textContent.trim();
      var done = function () { copy.textContent = "Copied"; setTimeout(function () { copy.textContent = "Copy citation"; }, 1500); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () {});
      } else {
        var range = document.createRange();
        range.selectNodeContents(el("citation-text"));
        var sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        done();
      }
    });
  }
})();
