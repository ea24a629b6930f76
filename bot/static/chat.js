// careloop web chat. Plain script, no libraries: everything a person sees is set with
// textContent (never innerHTML), so nothing a customer, an agent or the bot writes can run.
(() => {
  "use strict";

  const TEXTS = {
    en: {
      title: "Customer care", placeholder: "Type a message…", send: "Send",
      photo: "Send a photo", connecting: "Connecting…", online: "Online",
      offline: "Offline — reconnecting…",
      too_long: (n) => `That message is too long (limit ${n} characters). ` +
        "It is back in the box: please split it.",
      slow_down: "You are sending quickly; answers follow in order.",
      unavailable: "Sorry, that did not go through. Tap the message to try again.",
      photo_too_big: "That photo is too large.",
      not_an_image: "Only photos (JPEG, PNG, WebP, GIF) can be sent.",
      flood: "Too many messages at once. The chat reconnects in a moment.",
      bad_frame: "That could not be sent.",
      failed: "Not sent — tap to retry", photo_label: "Photo",
    },
    zh: {
      title: "客户服务", placeholder: "输入消息…", send: "发送",
      photo: "发送照片", connecting: "正在连接…", online: "在线",
      offline: "已断开，正在重新连接…",
      too_long: (n) => `消息太长（上限 ${n} 个字符），已放回输入框，请分成几条发送。`,
      slow_down: "您发送得太快了，我们会按顺序回复。",
      unavailable: "抱歉，消息未能发送，请点击该消息重试。",
      photo_too_big: "照片太大。",
      not_an_image: "只能发送照片（JPEG、PNG、WebP、GIF）。",
      flood: "消息过多，聊天将很快重新连接。",
      bad_frame: "无法发送。",
      failed: "未发送，点击重试", photo_label: "照片",
    },
  };
  const MAX_TEXT = 4000;
  const PHOTO_MAX_SIDE = 1600;
  const PHOTO_MAX_BYTES = 900 * 1024;
  const CJK = /[\u3400-\u9fff\uf900-\ufaff]/;

  const $ = (id) => document.getElementById(id);
  const log = $("log");
  const input = $("text");
  const notice = $("notice");
  const status = $("status");

  let lang = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
  let ws = null;
  let ready = false; // the server sent the history: frames may flow
  let delay = 1000;
  let statusState = "connecting";
  // Frames not yet answered, by client id, with their bubble: resent after a reconnect (the
  // server drops a duplicate by its id), so nothing typed is lost to a dropped connection.
  const pending = new Map();

  const t = (key) => TEXTS[lang][key];
  const newId = () => (crypto.randomUUID ? crypto.randomUUID()
    : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`);

  function applyTexts() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.title = t("title");
    $("title").textContent = t("title");
    input.placeholder = t("placeholder");
    $("send").textContent = t("send");
    $("photo-label").title = t("photo");
    $("photo-text").textContent = t("photo");
    setStatus(statusState);
  }

  function setLanguage(next) {
    if (next && TEXTS[next] && next !== lang) {
      lang = next;
      applyTexts();
    }
  }

  function followLanguage(text) {
    // The dialogue decides the customer's language; its replies tell the page.
    if (CJK.test(text)) setLanguage("zh");
    else if (/[A-Za-z]{3,}.*[A-Za-z]{3,}/.test(text)) setLanguage("en");
  }

  function setStatus(state) {
    statusState = state;
    status.dataset.state = state;
    status.textContent = t(state);
  }

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = false;
    clearTimeout(showNotice.timer);
    showNotice.timer = setTimeout(() => { notice.hidden = true; }, 8000);
  }

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
  }

  function bubble(cls, text) {
    const wrap = document.createElement("div");
    wrap.className = `msg ${cls}`;
    const p = document.createElement("p");
    p.className = "bubble";
    p.dir = "auto";
    p.textContent = text;
    wrap.appendChild(p);
    log.appendChild(wrap);
    return wrap;
  }

  function addMine(text) {
    const el = bubble("msg-me", text);
    el.dataset.from = "customer";
    scrollDown();
    return el;
  }

  function addBot(text, buttons, ref) {
    const el = bubble("msg-bot", text);
    el.dataset.from = "bot";
    if (buttons && buttons.length) {
      const group = document.createElement("div");
      group.className = "buttons";
      for (const row of buttons) {
        const line = document.createElement("div");
        line.className = "row";
        for (const b of row) {
          const btn = document.createElement("button");
          btn.type = "button";
          btn.className = "btn";
          btn.textContent = b.label;
          btn.addEventListener("click", () => press(group, b, ref));
          line.appendChild(btn);
        }
        group.appendChild(line);
      }
      el.appendChild(group);
    }
    scrollDown();
    return el;
  }

  function press(group, button, ref) {
    // One press per keyboard: a double tap must not answer twice.
    for (const b of group.querySelectorAll("button")) b.disabled = true;
    const el = addMine(button.label);
    submit({ type: "button", data: button.data, ref: ref, id: newId() }, el);
  }

  function markFailed(entry) {
    entry.el.dataset.state = "failed";
    entry.el.title = t("failed");
    entry.el.addEventListener("click", () => {
      if (entry.el.dataset.state !== "failed") return;
      entry.el.dataset.state = "sending";
      entry.el.title = "";
      submit(entry.frame, entry.el);
    }, { once: true });
  }

  function submit(frame, el) {
    pending.set(frame.id, { frame, el });
    el.dataset.state = "sending";
    if (ws && ready && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
  }

  function sendText() {
    const text = input.value.trim();
    if (!text) return;
    if (text.length > MAX_TEXT) {
      showNotice(t("too_long")(MAX_TEXT));
      return;
    }
    input.value = "";
    submit({ type: "message", text, id: newId() }, addMine(text));
  }

  function onError(frame) {
    const entry = frame.id ? pending.get(frame.id) : null;
    const message = TEXTS[lang][frame.code];
    if (frame.code === "too_long" && entry) {
      // Nothing lost: the text goes back in the box to be split.
      pending.delete(frame.id);
      entry.el.remove();
      if (!input.value) input.value = entry.frame.text || "";
    } else if (entry) {
      pending.delete(frame.id);
      markFailed(entry);
    }
    if (typeof message === "function") showNotice(message(frame.limit || MAX_TEXT));
    else showNotice(message || frame.message || t("bad_frame"));
  }

  function onHistory(frame) {
    setLanguage(frame.language);
    log.replaceChildren();
    for (const item of frame.items) {
      if (item.from === "customer") addMine(item.text);
      else addBot(item.text, item.buttons, item.ref);
    }
    // What was typed but not answered before the connection dropped goes again.
    for (const entry of pending.values()) {
      log.appendChild(entry.el);
      ws.send(JSON.stringify(entry.frame));
    }
    ready = true;
    scrollDown();
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "history": onHistory(frame); break;
      case "reply":
        followLanguage(frame.text);
        addBot(frame.text, frame.buttons, frame.ref);
        break;
      case "ack": {
        const entry = pending.get(frame.id);
        if (entry) entry.el.dataset.state = "sent";
        pending.delete(frame.id);
        break;
      }
      case "error": onError(frame); break;
      default: break;
    }
  }

  function connect() {
    ready = false;
    setStatus("connecting");
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const url = `${scheme}${location.host}/chat/ws?lang=${encodeURIComponent(navigator.language || "")}`;
    const socket = new WebSocket(url);
    ws = socket;
    socket.addEventListener("open", () => { delay = 1000; setStatus("online"); });
    socket.addEventListener("message", (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      if (frame && typeof frame === "object") onFrame(frame);
    });
    socket.addEventListener("close", () => {
      if (ws !== socket) return;
      ready = false;
      setStatus("offline");
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    });
  }

  // --- photos: shrunk and re-encoded here, which also drops EXIF data such as the location.
  async function shrink(file) {
    const bitmap = await createImageBitmap(file);
    let scale = Math.min(1, PHOTO_MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    let quality = 0.85;
    for (let attempt = 0; attempt < 10; attempt += 1) {
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      const blob = await new Promise((ok) => canvas.toBlob(ok, "image/jpeg", quality));
      if (blob && blob.size <= PHOTO_MAX_BYTES) return blob;
      if (quality > 0.5) quality -= 0.15;
      else scale *= 0.7;
    }
    throw new Error("too big");
  }

  function base64(blob) {
    return new Promise((ok, fail) => {
      const reader = new FileReader();
      reader.onload = () => ok(String(reader.result).split(",", 2)[1] || "");
      reader.onerror = () => fail(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  async function sendPhoto(file) {
    if (!file.type.startsWith("image/")) { showNotice(t("not_an_image")); return; }
    let data;
    try {
      data = await base64(await shrink(file));
    } catch {
      showNotice(t("photo_too_big"));
      return;
    }
    const caption = input.value.trim().slice(0, MAX_TEXT);
    input.value = "";
    const label = `📷 ${file.name || t("photo_label")}${caption ? `\n${caption}` : ""}`;
    const frame = { type: "photo", name: file.name || "photo.jpg", data, id: newId() };
    if (caption) frame.caption = caption;
    submit(frame, addMine(label));
  }

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    sendText();
  });
  input.addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter is a new line; Enter that ends an IME composition (Chinese
    // pinyin input) only commits the characters.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendText();
    }
  });
  $("photo").addEventListener("change", (event) => {
    const file = event.target.files && event.target.files[0];
    event.target.value = "";
    if (file) sendPhoto(file);
  });

  applyTexts();
  connect();
})();
