// civicbot simulator: one thread per channel and resident, loaded from and kept in step with
// GET /simulator/api/messages, messages sent with POST (the API is described in
// bot/web/simulator.py). Plain script, no framework, nothing from elsewhere.
//
// Network calls run one at a time, in the order they were asked for (a send waits for a poll
// in flight and the other way round), so the thread is only ever changed by one answer at a
// time. Bot messages are keyed by id: one that comes both in a POST answer and in a poll is
// shown once.
(function () {
  "use strict";

  const API = "/simulator/api/messages";
  const POLL_MS = 2000;
  const CHANNELS = { sms: "SMS", telegram: "Telegram" };
  const WHO = { in: "civicbot said: ", out: "You said: ", failed: "You tried to send: " };
  const PROBLEMS = {
    addressEmpty: "Enter who you are pretending to be, such as a phone number or a name",
    address: "Enter who you are pretending to be in 64 characters or fewer, using letters, numbers or symbols",
    text: "Enter a message",
    textLong: "The message is too long: shorten it and send it again",
  };

  const byId = (id) => document.getElementById(id);
  const phone = byId("phone");
  const header = byId("phone-header");
  const thread = byId("thread");
  const empty = byId("empty");
  const notice = byId("notice");
  const summary = byId("error-summary");
  const summaryBody = byId("error-summary-body");
  const form = byId("composer");
  const input = byId("text");
  const textError = byId("text-error");
  const address = byId("address");
  const addressGroup = byId("address-group");
  const addressError = byId("address-error");
  const formatTime = timeFormatter();

  let view = null; // the thread on screen: {channel, address, cursor, bots: Map id -> <li>}
  let queue = Promise.resolve();
  let pollTimer = 0;

  /** Run task after every call asked for before it; never rejects. */
  function enqueue(task) {
    const run = queue.then(task).catch(reportBug);
    queue = run;
    return run;
  }

  function reportBug(error) {
    // A mistake in this script, not the server: say so rather than fail silently.
    showSummary("Something went wrong in the simulator page. Reload the page to carry on.");
    setTimeout(() => { throw error; });
  }

  // ---- who the resident is ------------------------------------------------------------------

  function channel() {
    return document.querySelector("input[name=channel]:checked").value;
  }

  function addressProblem(value) {
    // Letters, digits, symbols or emoji, not only spaces or invisible characters; the field's
    // maxlength does not hold for a resident given in the address bar.
    if (!/[^\s\p{C}]/u.test(value)) return PROBLEMS.addressEmpty;
    return value.trim().length > 64 ? PROBLEMS.address : null;
  }

  /** The thread for the channel and resident now chosen; null (with the error shown) when the
   * resident field is not usable. ``loud`` moves focus to the error, as after pressing Send. */
  function currentView(loud) {
    const value = address.value.trim();
    const problem = addressProblem(value);
    if (problem) {
      showAddressError(problem, loud);
      if (view !== null) openThread();
      return null;
    }
    if (view === null || view.address !== value || view.channel !== channel()) openThread();
    return view;
  }

  /** Show the thread for the channel and resident in the form, loaded from the server. */
  function openThread(preloaded) {
    const value = address.value.trim();
    const ch = channel();
    phone.classList.toggle("telegram", ch === "telegram");
    header.textContent = CHANNELS[ch] + " · " + (value || "no resident");
    showNotice(null);
    thread.replaceChildren();
    const problem = addressProblem(value);
    if (problem) {
      showAddressError(problem, false);
      view = null;
      showEmpty("Enter who you are pretending to be to see their conversation.");
      return;
    }
    clearAddressError();
    const fresh = { channel: ch, address: value, cursor: null, bots: new Map() };
    view = fresh;
    remember(fresh);
    showEmpty("Loading the conversation…");
    // Screen readers hold back the live region's news until the history is drawn.
    thread.setAttribute("aria-busy", "true");
    if (preloaded) {
      renderHistory(fresh, preloaded);
    } else {
      enqueue(() => load(fresh));
    }
  }

  function remember(current) {
    const query = new URLSearchParams({ channel: current.channel, address: current.address });
    history.replaceState(null, "", "?" + query.toString());
  }

  function randomDigits(count) {
    const values = new Uint32Array(count);
    crypto.getRandomValues(values);
    return Array.from(values, (v) => String(v % 10)).join("");
  }

  function madeUpResident(ch) {
    // Ofcom keeps 07700 900000 to 900999 for drama, so these numbers reach nobody; a Telegram
    // private chat's id is the user's numeric id.
    if (ch === "sms") return "+447700900" + randomDigits(3);
    return String(1 + Math.floor(Math.random() * 8)) + randomDigits(9);
  }

  async function newResident() {
    const ch = channel();
    // Try a few made-up residents and take the first nobody has used yet.
    for (let attempt = 0; attempt < 5; attempt += 1) {
      const candidate = madeUpResident(ch);
      const data = await getThread({ channel: ch, address: candidate, cursor: null });
      const unused = data !== null && data.messages.length === 0 && (data.resident || []).length === 0;
      if (unused || (data !== null && attempt === 4)) {
        address.value = candidate;
        clearSummary();
        openThread(data);
        return;
      }
      if (data === null) return;
    }
  }

  // ---- talking to the server ----------------------------------------------------------------

  function threadUrl(current) {
    const query = new URLSearchParams({ channel: current.channel, address: current.address });
    if (current.cursor !== null) query.set("after", current.cursor);
    return API + "?" + query.toString();
  }

  /** GET the thread; null when the server cannot be reached or refuses. */
  async function getThread(current) {
    let response;
    try {
      response = await fetch(threadUrl(current), { headers: { Accept: "application/json" } });
    } catch (error) {
      offline(true);
      return null;
    }
    offline(false);
    if (!response.ok) return null;
    return response.json();
  }

  let wasOffline = false;
  function offline(now) {
    if (now && !wasOffline) showNotice("Cannot reach civicbot. Trying again…");
    if (!now && wasOffline) showNotice(null);
    wasOffline = now;
  }

  async function load(current) {
    if (current !== view) return;
    const data = await getThread(current);
    if (data === null || current !== view) {
      if (current === view) {
        thread.setAttribute("aria-busy", "false");
        showEmpty("Could not load the conversation. Trying again…");
      }
      return;
    }
    renderHistory(current, data);
  }

  async function poll(current) {
    if (current === null || current !== view) return;
    if (current.cursor === null) {
      await load(current);
      return;
    }
    const data = await getThread(current);
    if (data === null || current !== view) return;
    for (const message of data.messages) addBot(current, message);
    current.cursor = data.cursor;
  }

  function schedulePoll() {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(() => {
      if (document.hidden) {
        schedulePoll();
        return;
      }
      enqueue(() => poll(view)).then(schedulePoll);
    }, POLL_MS);
  }

  /** Send text, or tap a button (choice and messageId); the bubble shows as sent only once
   * the server has taken it. */
  function send(request) {
    const current = view;
    const mine = request.text ? residentBubble({ text: request.text, local: true }) : null;
    if (mine) place(mine, true);
    const body = { channel: current.channel, address: current.address, text: request.text };
    if (request.choice !== undefined) {
      body.choice = request.choice;
      if (request.messageId) body.message_id = request.messageId;
    }
    enqueue(async () => {
      let response;
      let data;
      try {
        response = await fetch(API, {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify(body),
        });
        data = await response.json().catch(() => ({}));
      } catch (error) {
        refused(mine, "civicbot could not be reached. Check it is still running, then try again.");
        return;
      }
      if (!response.ok) {
        refused(mine, explain(response.status, data));
        return;
      }
      const replies = data.replies || [];
      if (mine) sent(mine, replies.length ? replies[0].at : "");
      if (current !== view) return;
      for (const reply of replies) addBot(current, reply);
      if (data.edited) applyEdit(current, data.edited);
      showNotice(data.notice || null);
      await poll(current);
    });
  }

  /** A refusal in plain English; never the server's raw validation text. */
  function explain(status, data) {
    const fields = Array.isArray(data.errors) ? data.errors.map((e) => e.field) : [];
    if (status === 422 && fields.includes("address")) {
      showAddressError(PROBLEMS.address, false);
      return PROBLEMS.address;
    }
    if (status === 422 && fields.includes("text")) return PROBLEMS.textLong;
    if (status === 413) return PROBLEMS.textLong;
    if (status === 429) return "Too many messages at once. Wait a moment, then send it again.";
    if (status >= 500) return "civicbot had a problem (error " + status + "). Try again.";
    return "civicbot did not accept the message (error " + status + ").";
  }

  // ---- drawing the thread -------------------------------------------------------------------

  function renderHistory(current, data) {
    const items = [];
    for (const r of data.resident || []) items.push({ out: true, id: r.id, at: r.at, data: r });
    for (const m of data.messages) items.push({ out: false, id: m.id, at: m.at, data: m });
    items.sort((a, b) => compareKeys(key(a.at, !a.out, a.id), key(b.at, !b.out, b.id)));
    // Messages typed here and not yet answered stay (a sent one is in the history now).
    const waiting = Array.from(thread.querySelectorAll("li.pending, li.failed"));
    thread.replaceChildren();
    current.bots.clear();
    for (const item of items) {
      thread.append(item.out ? residentBubble(item.data) : botBubble(current, item.data));
    }
    thread.append(...waiting);
    thread.setAttribute("aria-busy", "false");
    current.cursor = data.cursor;
    showEmpty(null);
    thread.scrollTop = thread.scrollHeight;
  }

  function addBot(current, message) {
    const id = String(message.id);
    if (current.bots.has(id)) return;
    place(botBubble(current, message), false);
  }

  /** Put li where its time puts it: normally last, but before the resident's messages still
   * being sent (they are newer than anything the server has answered so far), so the thread
   * reads as it will after a reload. A message typed here goes last. Scrolled into view when
   * the reader was at the bottom already. */
  function place(li, mine) {
    const atBottom = thread.scrollHeight - thread.scrollTop - thread.clientHeight < 48;
    if (li.dataset.at) {
      const mark = keyOf(li);
      let before = thread.lastElementChild;
      while (before && (before.classList.contains("pending")
        || (before.dataset.at && compareKeys(keyOf(before), mark) > 0))) {
        before = before.previousElementSibling;
      }
      if (before) before.after(li);
      else thread.prepend(li);
    } else {
      thread.append(li);
    }
    showEmpty(null);
    if (atBottom || mine) thread.scrollTop = thread.scrollHeight;
  }

  function bubble(kind, text) {
    const li = document.createElement("li");
    li.className = "bubble " + kind;
    const body = document.createElement("p");
    body.className = "body";
    const who = document.createElement("span");
    who.className = "visually-hidden who";
    who.textContent = WHO[kind];
    const words = document.createElement("span");
    words.className = "text";
    words.textContent = text;
    body.append(who, words);
    const meta = document.createElement("span");
    meta.className = "meta";
    li.append(body, meta);
    return li;
  }

  function setTime(li, at) {
    const meta = li.querySelector(".meta");
    const when = at ? new Date(at) : null;
    if (when === null || Number.isNaN(when.getTime())) {
      meta.textContent = li.classList.contains("out") ? "Sent" : "";
      return;
    }
    li.dataset.at = at;
    const time = document.createElement("time");
    time.dateTime = at;
    time.textContent = formatTime(when);
    meta.replaceChildren(time);
  }

  function residentBubble(message) {
    const li = bubble("out", message.text);
    if (message.local) {
      li.classList.add("pending");
      li.querySelector(".meta").textContent = "Sending…";
      return li;
    }
    li.dataset.id = message.id;
    setTime(li, message.at);
    return li;
  }

  function sent(li, at) {
    li.classList.remove("pending");
    setTime(li, at);
  }

  function refused(li, reason) {
    showSummary(reason);
    if (li === null) return;
    li.classList.remove("pending", "out");
    li.classList.add("failed");
    li.querySelector(".who").textContent = WHO.failed;
    li.querySelector(".meta").textContent = "Not sent. " + reason;
    if (input.value === "") input.value = li.querySelector(".text").textContent;
  }

  function botBubble(current, message) {
    const li = bubble("in", message.text);
    li.dataset.id = String(message.id);
    setTime(li, message.at);
    if (message.buttons && message.buttons.length) {
      li.append(keyboard(current, String(message.id), message.buttons));
    }
    current.bots.set(String(message.id), li);
    return li;
  }

  /** Telegram's inline keyboard: a row per button, except that the page turns (data p:...)
   * share one row, as Telegram draws them. */
  function keyboard(current, messageId, buttons) {
    const box = document.createElement("div");
    box.className = "keyboard";
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "Buttons");
    let row = null;
    let paging = false;
    for (const button of buttons) {
      const turn = button.data.startsWith("p:");
      if (row === null || !(turn && paging)) {
        row = document.createElement("div");
        row.className = "keyboard-row";
        box.append(row);
      }
      paging = turn;
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = button.label;
      b.dataset.data = button.data;
      b.addEventListener("click", () => tap(current, messageId, button));
      row.append(b);
    }
    return box;
  }

  function tap(current, messageId, button) {
    if (current !== view || currentView(true) !== current) return;
    clearSummary();
    showNotice(null);
    // A choice (c:) or Done (d:) answers the question, so the thread shows what was chosen;
    // a toggle (t:) or page turn (p:) only redraws the keyboard, as on a phone.
    const answers = button.data.startsWith("c:") || button.data.startsWith("d:");
    send({ text: answers ? button.label : "", choice: button.data, messageId: messageId });
  }

  /** A toggle or page turn: the same message with its keyboard drawn again, in place. A
   * keyboard user stays where they were: on the button of the same kind (toggle, page turn,
   * Done) in the same place among its kind. */
  function applyEdit(current, edited) {
    const li = current.bots.get(String(edited.id));
    if (!li) return;
    li.querySelector(".text").textContent = edited.text;
    const old = li.querySelector(".keyboard");
    const focused = old && old.contains(document.activeElement) ? document.activeElement : null;
    const fresh = edited.buttons && edited.buttons.length
      ? keyboard(current, String(edited.id), edited.buttons)
      : null;
    if (old) old.remove();
    if (fresh) li.append(fresh);
    if (fresh && focused) refocus(old, focused, fresh);
  }

  function refocus(old, focused, fresh) {
    const kindOf = (b) => b.dataset.data.charAt(0);
    const kind = kindOf(focused);
    const before = Array.from(old.querySelectorAll("button")).filter((b) => kindOf(b) === kind);
    let choices = Array.from(fresh.querySelectorAll("button")).filter((b) => kindOf(b) === kind);
    if (choices.length === 0) choices = Array.from(fresh.querySelectorAll("button"));
    choices[Math.min(before.indexOf(focused), choices.length - 1)].focus();
  }

  // ---- order and time -----------------------------------------------------------------------

  /** Microseconds since 1970 from an ISO time with up to 6 decimals (0 when absent). */
  function stamp(at) {
    const ms = at ? Date.parse(at) : NaN;
    if (Number.isNaN(ms)) return 0;
    const fraction = /\.(\d+)/.exec(at);
    return ms * 1000 + (fraction ? Number((fraction[1] + "000000").slice(3, 6)) : 0);
  }

  /** Oldest first; what the resident sent before the replies it got at the same moment. */
  function key(at, fromBot, id) {
    return [stamp(at), fromBot ? 1 : 0, Number(id) || 0];
  }

  function keyOf(li) {
    return key(li.dataset.at, li.classList.contains("in"), li.dataset.id);
  }

  function compareKeys(a, b) {
    for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
    return 0;
  }

  function timeFormatter() {
    // Times shown to people are Europe/London; the date only when it is not today.
    try {
      const time = new Intl.DateTimeFormat("en-GB", {
        timeZone: "Europe/London", hour: "2-digit", minute: "2-digit",
      });
      const day = new Intl.DateTimeFormat("en-GB", {
        timeZone: "Europe/London", day: "numeric", month: "short",
      });
      return (when) => {
        const today = day.format(new Date()) === day.format(when);
        return today ? time.format(when) : day.format(when) + ", " + time.format(when);
      };
    } catch (error) {
      return (when) => when.toISOString().slice(11, 16) + " UTC";
    }
  }

  // ---- messages about the page itself -------------------------------------------------------

  function showEmpty(text) {
    if (text === null && thread.children.length === 0) {
      text = "No messages yet. Send HI to start.";
    }
    empty.textContent = text || "";
    empty.hidden = thread.children.length > 0 || !text;
  }

  function showNotice(text) {
    notice.textContent = text || "";
  }

  function withHiddenPrefix(element, text) {
    const prefix = document.createElement("span");
    prefix.className = "visually-hidden";
    prefix.textContent = "Error: ";
    element.replaceChildren(prefix, document.createTextNode(text));
    element.hidden = false;
  }

  function showAddressError(text, loud) {
    withHiddenPrefix(addressError, text);
    addressGroup.classList.add("form-group--error");
    address.setAttribute("aria-invalid", "true");
    if (loud) showSummary(text, address);
  }

  function clearAddressError() {
    addressError.hidden = true;
    addressGroup.classList.remove("form-group--error");
    address.removeAttribute("aria-invalid");
  }

  function showTextError(text) {
    withHiddenPrefix(textError, text);
    input.setAttribute("aria-invalid", "true");
  }

  function clearTextError() {
    textError.hidden = true;
    input.removeAttribute("aria-invalid");
  }

  /** The GOV.UK error summary above the message box; ``field`` makes the text a link to it. */
  function showSummary(text, field) {
    if (field) {
      const link = document.createElement("a");
      link.href = "#" + field.id;
      link.textContent = text;
      link.addEventListener("click", (event) => {
        event.preventDefault();
        field.scrollIntoView({ block: "center" });
        field.focus();
      });
      summaryBody.replaceChildren(link);
    } else {
      summaryBody.textContent = text;
    }
    summary.hidden = false;
    if (field) summary.focus();
  }

  function clearSummary() {
    summary.hidden = true;
    summaryBody.replaceChildren();
  }

  // ---- wiring -------------------------------------------------------------------------------

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    const current = currentView(true);
    if (current === null) return;
    if (!text) {
      clearSummary();
      showTextError(PROBLEMS.text);
      input.focus();
      return;
    }
    clearTextError();
    clearSummary();
    showNotice(null);
    input.value = "";
    send({ text: text });
  });

  input.addEventListener("input", () => {
    if (input.value.trim()) clearTextError();
  });

  for (const radio of document.querySelectorAll("input[name=channel]")) {
    radio.addEventListener("change", () => {
      clearSummary();
      openThread();
    });
  }

  address.addEventListener("change", () => {
    clearSummary();
    openThread();
  });

  byId("new-person").addEventListener("click", () => enqueue(newResident));

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) schedulePoll();
  });

  // Start where the address bar says (so a reload keeps the resident), else the form's default.
  const start = new URLSearchParams(location.search);
  const startChannel = document.querySelector(
    "input[name=channel][value='" + (start.get("channel") === "telegram" ? "telegram" : "sms") + "']",
  );
  if (start.has("channel")) startChannel.checked = true;
  if (start.has("address")) address.value = start.get("address");
  openThread();
  schedulePoll();
})();
