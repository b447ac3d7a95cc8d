// plm report: draws every plot of the page as SVG from the JSON block #report-data (no libraries, no network).
// Each plot: one metric against the step, every run's series overlaid (training solid, evaluations dashed with
// markers), a log-scale toggle, a legend (the swatch hides / shows a series, the name links to the run) and a
// readout of the values nearest the pointer.
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                "#7f7f7f", "#bcbd22", "#393b79", "#843c39", "#637939", "#e6550d", "#7b4173", "#3182bd",
                "#8c6d31", "#31a354", "#636363", "#ad494a"];
  var W = 640, H = 300, M = {left: 64, right: 16, top: 12, bottom: 40};

  function el(name, attrs, parent) {
    var e = document.createElementNS(SVGNS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (parent) { parent.appendChild(e); }
    return e;
  }

  function html(name, attrs, parent, text) {
    var e = document.createElement(name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    if (parent) { parent.appendChild(e); }
    return e;
  }

  function fmt(v) {
    if (v === 0) { return "0"; }
    var a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) { return v.toExponential(1).replace("e+", "e"); }
    return String(Number(v.toPrecision(4)));
  }

  // Ticks at 1, 2 or 5 times a power of ten covering [lo, hi].
  function linearTicks(lo, hi, count) {
    var span = hi - lo, raw = span / count, mag = Math.pow(10, Math.floor(Math.log10(raw))), r = raw / mag;
    var step = (r >= 5 ? 10 : r >= 2 ? 5 : r >= 1 ? 2 : 1) * mag;
    if (r < 1.5) { step = mag; }
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
      out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    }
    return out;
  }

  // Ticks for a log axis over [lo, hi] (both > 0): decades, or 1-2-5 within them when the range is short.
  function logTicks(lo, hi) {
    var a = Math.floor(Math.log10(lo)), b = Math.ceil(Math.log10(hi)), out = [], mults = [1];
    if (b - a <= 2) { mults = [1, 2, 5]; }
    for (var e = a; e <= b; e++) {
      for (var i = 0; i < mults.length; i++) {
        var t = mults[i] * Math.pow(10, e);
        if (t >= lo * (1 - 1e-9) && t <= hi * (1 + 1e-9)) { out.push(t); }
      }
    }
    if (out.length < 2) {  // less than a factor 2 of range: evenly spaced in log
      out = [];
      for (var j = 0; j <= 4; j++) { out.push(Number((lo * Math.pow(hi / lo, j / 4)).toPrecision(3))); }
    }
    return out;
  }

  function Plot(fig, spec) {
    this.fig = fig;
    this.spec = spec;
    this.hidden = {};
    this.log = false;
    var head = html("figcaption", {}, fig);
    html("span", {"class": "metric"}, head, spec.metric);
    var label = html("label", {"class": "logtoggle"}, head);
    this.toggle = html("input", {"type": "checkbox"}, label);
    label.appendChild(document.createTextNode(" log scale"));
    this.svg = el("svg", {"viewBox": "0 0 " + W + " " + H, "role": "img", "data-scale": "linear",
                          "aria-label": spec.metric + " against step"}, fig);
    this.readout = html("div", {"class": "readout"}, fig, "\u00a0");
    this.legend = html("ul", {"class": "legend"}, fig);
    var self = this;
    this.toggle.addEventListener("change", function () { self.setLog(self.toggle.checked); });
    this.svg.addEventListener("mousemove", function (ev) { self.read(ev); });
    this.svg.addEventListener("mouseleave", function () {
      self.readout.textContent = "\u00a0";
      if (self.cursor) { self.cursor.setAttribute("visibility", "hidden"); }
    });
    this.buildLegend();
    this.draw();
  }

  Plot.prototype.setLog = function (on) {
    this.log = on;
    this.toggle.checked = on;
    this.draw();
  };

  Plot.prototype.buildLegend = function () {
    var self = this;
    this.spec.series.forEach(function (s, i) {
      var li = html("li", {}, self.legend);
      var sw = html("button", {"type": "button", "class": "swatch" + (s.kind === "eval" ? " eval" : ""),
                               "title": "hide / show this series", "aria-pressed": "true"}, li);
      sw.style.borderColor = COLORS[s.color % COLORS.length];
      if (s.kind !== "eval") { sw.style.background = COLORS[s.color % COLORS.length]; }
      sw.addEventListener("click", function () {
        self.hidden[i] = !self.hidden[i];
        sw.setAttribute("aria-pressed", self.hidden[i] ? "false" : "true");
        li.className = self.hidden[i] ? "off" : "";
        self.draw();
      });
      var a = html("a", {"href": "#" + s.anchor}, li, s.name);
      if (s.stride > 1) { a.title = "every " + s.stride + "th logged point shown"; }
    });
  };

  Plot.prototype.visible = function () {
    var self = this;
    return this.spec.series.filter(function (s, i) { return !self.hidden[i]; });
  };

  Plot.prototype.ok = function (y) { return y !== null && isFinite(y) && (!this.log || y > 0); };

  Plot.prototype.draw = function () {
    var svg = this.svg, self = this;
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    svg.setAttribute("data-scale", this.log ? "log" : "linear");
    var xs = [], ys = [], dropped = 0;
    this.visible().forEach(function (s) {
      s.points.forEach(function (p) {
        xs.push(p[0]);
        if (self.ok(p[1])) { ys.push(p[1]); } else if (p[1] !== null) { dropped++; }
      });
    });
    if (!ys.length) {
      el("text", {"x": W / 2, "y": H / 2, "text-anchor": "middle", "class": "empty"}, svg).textContent =
        this.log ? "no positive values to show on a log scale" : "no values";
      return;
    }
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { var d = Math.abs(y0) * 0.1 || 1; y0 = this.log ? y0 / 2 : y0 - d; y1 = this.log ? y1 * 2 : y1 + d; }
    var ty = this.log ? function (v) { return Math.log10(v); } : function (v) { return v; };
    var pad = (ty(y1) - ty(y0)) * 0.05, lo = ty(y0) - pad, hi = ty(y1) + pad;
    if (!this.log) { y0 = lo; y1 = hi; }
    var iw = W - M.left - M.right, ih = H - M.top - M.bottom;
    var sx = function (v) { return M.left + (v - x0) / (x1 - x0) * iw; };
    var sy = function (v) { return M.top + ih - (ty(v) - lo) / (hi - lo) * ih; };
    this.scale = {sx: sx, sy: sy, x0: x0, x1: x1, iw: iw};
    var axis = el("g", {"class": "axis"}, svg);
    var yt = this.log ? logTicks(Math.pow(10, lo), Math.pow(10, hi)) : linearTicks(y0, y1, 5);
    yt.forEach(function (t) {
      var y = sy(t);
      el("line", {"x1": M.left, "x2": W - M.right, "y1": y, "y2": y, "class": "grid"}, axis);
      el("text", {"x": M.left - 6, "y": y + 4, "text-anchor": "end", "class": "ytick"}, axis).textContent = fmt(t);
    });
    linearTicks(x0, x1, 6).forEach(function (t) {
      var x = sx(t);
      el("line", {"x1": x, "x2": x, "y1": M.top, "y2": M.top + ih, "class": "grid"}, axis);
      el("text", {"x": x, "y": H - M.bottom + 16, "text-anchor": "middle", "class": "xtick"}, axis).textContent = fmt(t);
    });
    el("rect", {"x": M.left, "y": M.top, "width": iw, "height": ih, "class": "frame"}, axis);
    el("text", {"x": M.left + iw / 2, "y": H - 4, "text-anchor": "middle", "class": "label"}, axis).textContent = "step";
    el("text", {"x": 12, "y": M.top + ih / 2, "text-anchor": "middle", "class": "label",
                "transform": "rotate(-90 12 " + (M.top + ih / 2) + ")"}, axis).textContent =
      this.spec.metric + (this.log ? " (log)" : "");
    this.visible().forEach(function (s) {
      var color = COLORS[s.color % COLORS.length], d = "", pen = "M";
      s.points.forEach(function (p) {
        if (!self.ok(p[1])) { pen = "M"; return; }
        d += pen + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1) + " ";
        pen = "L";
      });
      if (!d) { return; }
      el("path", {"d": d, "stroke": color, "class": "series " + s.kind, "data-series": s.name}, svg);
      if ((s.kind === "eval" && s.points.length <= 200) || d.split("L").length === 1) {  // evals; a lone point
        s.points.forEach(function (p) {
          if (self.ok(p[1])) { el("circle", {"cx": sx(p[0]), "cy": sy(p[1]), "r": 2.5, "fill": color}, svg); }
        });
      }
    });
    if (dropped) {
      el("text", {"x": W - M.right - 4, "y": M.top + 14, "text-anchor": "end", "class": "empty"}, svg).textContent =
        dropped + " value(s) \u2264 0 not shown on the log scale";
    }
    this.cursor = el("line", {"y1": M.top, "y2": M.top + ih, "class": "cursor", "visibility": "hidden"}, svg);
  };

  // The readout: at the step nearest the pointer, each visible series' value there.
  Plot.prototype.read = function (ev) {
    if (!this.scale) { return; }
    var box = this.svg.getBoundingClientRect(), x = (ev.clientX - box.left) / box.width * W;
    var s = this.scale, step = s.x0 + (x - M.left) / s.iw * (s.x1 - s.x0), parts = [];
    if (x < M.left || x > W - M.right) { return; }
    this.visible().forEach(function (ser) {
      var best = null;
      ser.points.forEach(function (p) {
        if (p[1] !== null && (best === null || Math.abs(p[0] - step) < Math.abs(best[0] - step))) { best = p; }
      });
      if (best) { parts.push(ser.name + " @" + best[0] + ": " + fmt(best[1])); }
    });
    this.cursor.setAttribute("x1", x);
    this.cursor.setAttribute("x2", x);
    this.cursor.setAttribute("visibility", "visible");
    this.readout.textContent = parts.join("   ") || "\u00a0";
  };

  function main() {
    var data = JSON.parse(document.getElementById("report-data").textContent);
    var plots = data.plots.map(function (spec) { return new Plot(document.getElementById(spec.id), spec); });
    var all = document.getElementById("log-all");
    if (all) {
      all.addEventListener("change", function () { plots.forEach(function (p) { p.setLog(all.checked); }); });
    }
    document.body.setAttribute("data-plots-drawn", String(plots.length));
  }

  main();
})();
