// The usage page. The chart: credits per day, stacked by model, project or member.
// The server embeds exact decimal strings (json_script); they are parsed to numbers here only
// to draw bars. Every figure a person reads exactly is in the table.
(function () {
  "use strict";
  var PALETTE = ["#0b5cad", "#e07b00", "#2e8540", "#b42318", "#6f42c1", "#00838f", "#8a6d00",
    "#57606a"];

  function draw() {
    var source = document.getElementById("usage-chart-data");
    var canvas = document.getElementById("usage-chart");
    if (!source || !canvas || typeof window.Chart === "undefined") return;
    var data = JSON.parse(source.textContent);

    function datasets(stack) {
      return (data.stacks[stack] || []).map(function (series, i) {
        return {
          label: series.label,
          data: series.credits.map(Number),
          exact: series.credits,
          backgroundColor: PALETTE[i % PALETTE.length],
          stack: "credits",
        };
      });
    }

    var chart = new window.Chart(canvas, {
      type: "bar",
      data: { labels: data.days, datasets: datasets("model") },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: {
          x: { stacked: true, ticks: { maxRotation: 0, autoSkip: true } },
          y: { stacked: true, beginAtZero: true, title: { display: true, text: "credits" } },
        },
        plugins: {
          legend: { position: "bottom" },
          tooltip: {
            callbacks: {
              // the exact decimal string, not the float drawn
              label: function (ctx) {
                return ctx.dataset.label + ": " + ctx.dataset.exact[ctx.dataIndex] + " credits";
              },
            },
          },
        },
      },
    });
    canvas.dataset.ready = "true";

    var switcher = document.getElementById("stack-switch");
    if (switcher) {
      switcher.addEventListener("change", function (event) {
        if (event.target.name !== "stack") return;
        chart.data.datasets = datasets(event.target.value);
        chart.update();
        canvas.dataset.stack = event.target.value;
      });
    }
  }

  // The filter form is swapped in by htmx; a 400 carries the form with its error messages, so
  // it is swapped in too (htmx leaves 4xx responses out by default).
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.xhr.status === 400) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
