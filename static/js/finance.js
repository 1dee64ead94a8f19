// The finance dashboard's revenue chart. The figures are decimal strings in the page
// (json_script); they become numbers only for drawing. The table under the chart is the source.
(function () {
  "use strict";
  var source = document.getElementById("revenue-data");
  var canvas = document.getElementById("revenue-chart");
  if (!source || !canvas || typeof Chart === "undefined") {
    return;
  }
  var days = JSON.parse(source.textContent);
  new Chart(canvas, {
    type: "bar",
    data: {
      labels: days.map(function (d) { return d.day; }),
      datasets: [
        { label: "Payments (USD)", data: days.map(function (d) { return Number(d.gross); }), backgroundColor: "#0b5cad" },
        { label: "Refunds (USD)", data: days.map(function (d) { return Number(d.refunds); }), backgroundColor: "#b42318" }
      ]
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "USD" } } },
      plugins: {
        tooltip: {
          callbacks: {
            // Show the exact decimal string, not the float used for drawing.
            label: function (ctx) {
              var d = days[ctx.dataIndex];
              return ctx.dataset.label + ": " + (ctx.datasetIndex === 0 ? d.gross : d.refunds) + " (net " + d.net + ")";
            }
          }
        }
      }
    }
  });
})();
