// civicbot simulator: posts to /simulator/api/messages and shows replies as the channel would.
(function () {
  const thread = document.getElementById("thread");
  const form = document.getElementById("composer");
  const input = document.getElementById("text");
  const address = document.getElementById("address");
  const header = document.getElementById("phone-header");
  const error = document.getElementById("error");
  const phone = document.querySelector(".phone");

  function channel() { return document.querySelector("input[name=channel]:checked").value; }

  function refreshHeader() {
    const ch = channel();
    header.textContent = (ch === "sms" ? "SMS" : "Telegram") + " · " + address.value;
    phone.classList.toggle("telegram", ch === "telegram");
  }

  function bubble(kind, text, meta) {
    const li = document.createElement("li");
    li.className = "bubble " + kind;
    li.textContent = text;
    if (meta) {
      const m = document.createElement("span");
      m.className = "meta";
      m.textContent = meta;
      li.appendChild(m);
    }
    thread.appendChild(li);
    thread.scrollTop = thread.scrollHeight;
    return li;
  }

  function system(text) {
    const li = document.createElement("li");
    li.className = "system";
    li.textContent = text;
    thread.appendChild(li);
  }

  async function send(text, choice) {
    error.hidden = true;
    bubble("out", text);
    const body = { channel: channel(), address: address.value, text: text };
    if (choice) body.choice = choice;
    let response;
    try {
      response = await fetch("/simulator/api/messages", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (e) {
      error.textContent = "Could not reach civicbot. Is `make run` still going?";
      error.hidden = false;
      return;
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      error.textContent = data.detail || ("The bot answered " + response.status);
      error.hidden = false;
      return;
    }
    if (data.replies.length === 0) system("(no reply)");
    for (const reply of data.replies) {
      const li = bubble("in", reply.text);
      if (reply.buttons && reply.buttons.length) {
        const box = document.createElement("div");
        box.className = "buttons";
        for (const b of reply.buttons) {
          const btn = document.createElement("button");
          btn.type = "button";
          btn.textContent = b.label;
          btn.addEventListener("click", () => send(b.label, b.data));
          box.appendChild(btn);
        }
        li.appendChild(box);
      }
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    send(text);
  });
  document.querySelectorAll("input[name=channel]").forEach((r) =>
    r.addEventListener("change", () => { refreshHeader(); system("Switched to " + header.textContent); }));
  address.addEventListener("change", () => { refreshHeader(); thread.innerHTML = ""; });
  document.getElementById("new-person").addEventListener("click", () => {
    address.value = "+4477009" + String(Math.floor(Math.random() * 100000)).padStart(5, "0");
    thread.innerHTML = "";
    refreshHeader();
  });
  refreshHeader();
})();
