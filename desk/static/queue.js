// The review queue's keyboard shortcuts and bulk selection. The page works without this file:
// every action is a plain form; here keys only move, select and press those same forms.
//   j / k  next / previous mention      x  select it for a bulk action
//   t      create a ticket              r  open the reply box (draft prefilled)
//   d      dismiss
"use strict";

(function () {
  const rows = Array.from(document.querySelectorAll("ol.queue > li.mention"));
  const count = document.getElementById("selected-count");
  let current = -1;

  function typing(target) {
    if (!target) return false;
    const tag = target.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || target.isContentEditable;
  }

  function focusRow(index) {
    if (!rows.length) return;
    current = Math.max(0, Math.min(rows.length - 1, index));
    rows.forEach((row, i) => row.classList.toggle("current", i === current));
    rows[current].focus({ preventScroll: true });
    rows[current].scrollIntoView({ block: "nearest" });
  }

  function submitAction(name) {
    if (current < 0) return;
    const form = rows[current].querySelector('form[data-action="' + name + '"]');
    if (!form) return;
    if (typeof form.requestSubmit === "function") form.requestSubmit();
    else form.submit();
  }

  function openReply() {
    if (current < 0) return;
    const details = rows[current].querySelector('details[data-action="reply"]');
    if (!details) return;
    details.open = true;
    const box = details.querySelector("textarea");
    if (box) {
      box.focus();
      box.setSelectionRange(box.value.length, box.value.length);
    }
  }

  function updateCount() {
    if (!count) return;
    count.textContent = String(
      document.querySelectorAll('input[name="ids"][form="bulk"]:checked').length
    );
  }

  function toggleSelected() {
    if (current < 0) return;
    const box = rows[current].querySelector('input[name="ids"]');
    if (box) {
      box.checked = !box.checked;
      updateCount();
    }
  }

  document.addEventListener("change", (event) => {
    if (event.target && event.target.name === "ids") updateCount();
  });

  rows.forEach((row, i) => {
    row.addEventListener("click", () => {
      current = i;
      rows.forEach((r, j) => r.classList.toggle("current", j === i));
    });
  });

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) {
      if (event.key === "Escape" && typing(event.target)) event.target.blur();
      return;
    }
    const keys = {
      j: () => focusRow(current + 1),
      k: () => focusRow(current - 1),
      x: toggleSelected,
      t: () => submitAction("ticket"),
      d: () => submitAction("dismiss"),
      r: openReply,
    };
    const run = keys[event.key];
    if (!run) return;
    event.preventDefault();
    if (current < 0 && event.key !== "j" && event.key !== "k") {
      focusRow(0); // the first key picks a row; an action needs a row the agent has seen
      return;
    }
    run();
  });

  updateCount();
})();
