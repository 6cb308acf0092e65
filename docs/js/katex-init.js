// Typeset the math that pymdownx.arithmatex (generic mode) leaves in .arithmatex elements as
// \( ... \) and \[ ... \], with the KaTeX files shipped in docs/vendor/katex (no CDN).
(function () {
  function typeset(root) {
    root.querySelectorAll(".arithmatex").forEach(function (el) {
      renderMathInElement(el, {
        delimiters: [
          { left: "\\(", right: "\\)", display: false },
          { left: "\\[", right: "\\]", display: true }
        ],
        throwOnError: false
      });
    });
  }
  if (typeof document$ !== "undefined") {
    document$.subscribe(function () { typeset(document.body); });  // Material: every page load
  } else {
    document.addEventListener("DOMContentLoaded", function () { typeset(document.body); });
  }
})();
