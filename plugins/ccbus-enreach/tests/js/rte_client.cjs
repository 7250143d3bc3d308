// Microsoft's own SignalR JavaScript client against the RTE simulator, as the Enreach
// document's browser example does it: REST token, HubConnectionBuilder with an access
// token factory (WebSockets), AvailableSubscriptions, Subscribe, MessageReceived.
//
//   node rte_client.cjs API_URL USERNAME SECRET ENTITY_ID EVENT_NAME COUNT
//
// SIGNALR_DIR names the directory whose node_modules holds @microsoft/signalr.
// Every step prints one JSON line on stdout, for the Python test to read.
"use strict";
const path = require("path");
const signalR = require(path.join(process.env.SIGNALR_DIR, "node_modules", "@microsoft", "signalr"));

const [apiUrl, username, secret, entityId, eventName, countText] = process.argv.slice(2);
const wanted = Number(countText);
const say = (kind, value) => console.log(JSON.stringify({ kind, value }));

async function main() {
  const auth = Buffer.from(`${username}:${secret}`).toString("base64");
  const response = await fetch(`${apiUrl}/token/me/rte/`, { headers: { Authorization: `Basic ${auth}` } });
  if (response.status !== 200) throw new Error(`token call answered ${response.status}`);
  const rte = await response.json();
  say("token", { endpoint: rte.WssEndpoint });

  // Outside a browser the client resolves only http(s) URLs; it derives ws(s) itself.
  const hubUrl = rte.WssEndpoint.replace(/^ws/, "http");
  const connection = new signalR.HubConnectionBuilder()
    .withUrl(hubUrl, {
      accessTokenFactory: () => rte.Token,
      transport: signalR.HttpTransportType.WebSockets,
    })
    .withAutomaticReconnect()
    .configureLogging(signalR.LogLevel.Warning)
    .build();

  let received = 0;
  const done = new Promise((resolve) => {
    connection.on("MessageReceived", (message) => {
      received += 1;
      say("message", message);
      if (received >= wanted) resolve();
    });
  });

  await connection.start();
  say("connected", { connectionId: connection.connectionId });
  say("available", await connection.invoke("AvailableSubscriptions"));
  const subscriptions = [
    { EntityId: entityId, EventName: eventName },
    { EntityId: "not-a-guid", EventName: eventName },
  ];
  say("subscribed", await connection.invoke("Subscribe", subscriptions));
  say("active", await connection.invoke("ActiveSubscriptions"));
  await done;
  say("unsubscribeAll", await connection.invoke("UnsubscribeAll"));
  await connection.stop();
  say("stopped", received);
}

main().catch((err) => {
  say("error", String(err));
  process.exit(1);
});
