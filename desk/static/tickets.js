// careloop desk, ticket pages: conveniences only; every form works without this file.
"use strict";

(function () {
  // Canned replies: choosing one inserts its text (variables already filled in by the server)
  // at the cursor, instead of reloading the page with ?canned=.
  const select = document.getElementById("canned-select");
  const reply = document.getElementById("reply-text");
  if (select && reply) {
    const button = document.querySelector(".insert-canned");
    if (button) button.classList.add("hidden");
    select.addEventListener("change", function () {
      const option = select.options[select.selectedIndex];
      const text = option ? option.dataset.text : "";
      if (!text) return;
      const start = reply.selectionStart || 0;
      const end = reply.selectionEnd || 0;
      reply.value = reply.value.slice(0, start) + text + reply.value.slice(end);
      reply.focus();
      reply.selectionStart = reply.selectionEnd = start + text.length;
      select.selectedIndex = 0;
    });
  }

  // Ctrl+Enter (or Cmd+Enter) sends the reply.
  if (reply) {
    reply.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && reply.form) {
        event.preventDefault();
        reply.form.requestSubmit();
      }
    });
  }

  // On the list: "/" jumps to the search box, "r" to the reply box on a ticket page.
  document.addEventListener("keydown", function (event) {
    const target = event.target;
    const typing = target instanceof HTMLElement &&
      (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "/") {
      const search = document.querySelector(".filters input[name=q]");
      if (search) { event.preventDefault(); search.focus(); }
    } else if (event.key === "r" && reply) {
      event.preventDefault();
      reply.focus();
    }
  });

  // A merge closes this ticket for good: ask once.
  document.querySelectorAll("form[action$='/merge']").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      const into = form.querySelector("input[name=into]");
      const question = document.documentElement.lang.startsWith("zh")
        ? "合并到 " + (into ? into.value : "") + " 并关闭此工单？"
        : "Merge into " + (into ? into.value : "") + " and close this ticket?";
      if (!window.confirm(question)) event.preventDefault();
    });
  });
})();
