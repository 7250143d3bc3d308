// A JMS peer for ccbus's interop tests: the vendor's side (CVP publishing events,
// the CUCM Connector answering commands) written against the JMS 1.1 API with the
// ActiveMQ client Debian ships, so what ccbus sends over STOMP is checked by a real
// JMS application and what it receives was produced by one.
//
// Usage: java JmsPeer <broker url> [user] [password]
//
// Commands arrive on stdin, one per line, fields separated by TABs; text fields
// are base64 (UTF-8) so bodies may hold tabs and newlines. Answers are JSON lines
// on stdout. Commands:
//
//   send <dest> <b64 body> <type|-> <correlationId|-> <ttlMs|0> <persistent 1|0> <bytes 1|0>
//        -> {"event":"sent","messageId":...}
//   bulk <dest> <count> <b64 body> <persistent 1|0>      (body may contain %d: the sequence)
//        -> {"event":"bulk","count":N,"seconds":S}
//   consume <dest>        start consuming (queue:NAME or topic:NAME)
//        -> {"event":"consuming","destination":...}, then per message:
//           {"event":"message","index":i,"class":"TextMessage"|"BytesMessage",
//            "type":..,"correlationId":..,"replyTo":..,"expiration":..,"deliveryMode":..,
//            "destination":..,"messageId":..,"body":..}
//   reply <index> <b64 body> <type|-> <correlationId|-|=>  ('=' copies the request's)
//        -> {"event":"replied","index":i,"messageId":...}
//   ping  -> {"event":"pong"}
//   quit
//
// Destinations are "queue:NAME" or "topic:NAME". Errors are reported as
// {"event":"error","message":...} and the peer keeps going.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

import javax.jms.BytesMessage;
import javax.jms.Connection;
import javax.jms.DeliveryMode;
import javax.jms.Destination;
import javax.jms.Message;
import javax.jms.MessageConsumer;
import javax.jms.MessageProducer;
import javax.jms.Session;
import javax.jms.TextMessage;

import org.apache.activemq.ActiveMQConnectionFactory;

public class JmsPeer {
    private static final PrintStream OUT =
        new PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), true,
                        StandardCharsets.UTF_8);
    private static final Map<Integer, Message> RECEIVED = new ConcurrentHashMap<>();
    private static final AtomicInteger INDEX = new AtomicInteger();

    public static void main(String[] args) throws Exception {
        ActiveMQConnectionFactory factory = new ActiveMQConnectionFactory(args[0]);
        if (args.length >= 3) {
            factory.setUserName(args[1]);
            factory.setPassword(args[2]);
        }
        Connection connection = factory.createConnection();
        connection.start();
        // Consumers deliver on their own session thread; producers use this one.
        Session session = connection.createSession(false, Session.AUTO_ACKNOWLEDGE);
        Session consumerSession = connection.createSession(false, Session.AUTO_ACKNOWLEDGE);
        MessageProducer producer = session.createProducer(null);
        emit("{\"event\":\"ready\"}");

        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            String[] f = line.split("\t", -1);
            try {
                switch (f[0]) {
                    case "send": {
                        Destination dest = destination(session, f[1]);
                        Message message = body(session, text(f[2]), f[7].equals("1"));
                        if (!f[3].equals("-")) message.setJMSType(text(f[3]));
                        if (!f[4].equals("-")) message.setJMSCorrelationID(text(f[4]));
                        int mode = f[6].equals("1") ? DeliveryMode.PERSISTENT : DeliveryMode.NON_PERSISTENT;
                        producer.send(dest, message, mode, Message.DEFAULT_PRIORITY, Long.parseLong(f[5]));
                        emit("{\"event\":\"sent\",\"messageId\":" + json(message.getJMSMessageID()) + "}");
                        break;
                    }
                    case "bulk": {
                        Destination dest = destination(session, f[1]);
                        int count = Integer.parseInt(f[2]);
                        String template = text(f[3]);
                        int mode = f[4].equals("1") ? DeliveryMode.PERSISTENT : DeliveryMode.NON_PERSISTENT;
                        long start = System.nanoTime();
                        for (int i = 0; i < count; i++) {
                            TextMessage message = session.createTextMessage(template.replace("%d", Integer.toString(i)));
                            producer.send(dest, message, mode, Message.DEFAULT_PRIORITY, 0);
                        }
                        double seconds = (System.nanoTime() - start) / 1e9;
                        emit("{\"event\":\"bulk\",\"count\":" + count + ",\"seconds\":" + seconds + "}");
                        break;
                    }
                    case "consume": {
                        MessageConsumer consumer = consumerSession.createConsumer(destination(consumerSession, f[1]));
                        consumer.setMessageListener(JmsPeer::received);
                        emit("{\"event\":\"consuming\",\"destination\":" + json(f[1]) + "}");
                        break;
                    }
                    case "reply": {
                        int index = Integer.parseInt(f[1]);
                        Message request = RECEIVED.get(index);
                        if (request == null || request.getJMSReplyTo() == null) {
                            emit("{\"event\":\"error\",\"message\":" + json("no reply-to for message " + index) + "}");
                            break;
                        }
                        TextMessage reply = session.createTextMessage(text(f[2]));
                        if (!f[3].equals("-")) reply.setJMSType(text(f[3]));
                        if (f[4].equals("=")) reply.setJMSCorrelationID(request.getJMSCorrelationID());
                        else if (!f[4].equals("-")) reply.setJMSCorrelationID(text(f[4]));
                        producer.send(request.getJMSReplyTo(), reply);
                        emit("{\"event\":\"replied\",\"index\":" + index + ",\"messageId\":" + json(reply.getJMSMessageID()) + "}");
                        break;
                    }
                    case "ping":
                        emit("{\"event\":\"pong\"}");
                        break;
                    case "quit":
                        connection.close();
                        return;
                    default:
                        emit("{\"event\":\"error\",\"message\":" + json("unknown command " + f[0]) + "}");
                }
            } catch (Exception e) {
                emit("{\"event\":\"error\",\"message\":" + json(e.toString()) + "}");
            }
        }
        connection.close();
    }

    private static void received(Message message) {
        try {
            int index = INDEX.getAndIncrement();
            RECEIVED.put(index, message);
            String kind;
            String body;
            if (message instanceof TextMessage) {
                kind = "TextMessage";
                body = ((TextMessage) message).getText();
            } else if (message instanceof BytesMessage) {
                kind = "BytesMessage";
                BytesMessage bytes = (BytesMessage) message;
                byte[] data = new byte[(int) bytes.getBodyLength()];
                bytes.readBytes(data);
                body = new String(data, StandardCharsets.UTF_8);
            } else {
                kind = message.getClass().getSimpleName();
                body = null;
            }
            Destination replyTo = message.getJMSReplyTo();
            emit("{\"event\":\"message\",\"index\":" + index
                + ",\"class\":" + json(kind)
                + ",\"type\":" + json(message.getJMSType())
                + ",\"correlationId\":" + json(message.getJMSCorrelationID())
                + ",\"replyTo\":" + json(replyTo == null ? null : replyTo.toString())
                + ",\"expiration\":" + message.getJMSExpiration()
                + ",\"deliveryMode\":" + json(message.getJMSDeliveryMode() == DeliveryMode.PERSISTENT ? "persistent" : "non_persistent")
                + ",\"destination\":" + json(String.valueOf(message.getJMSDestination()))
                + ",\"messageId\":" + json(message.getJMSMessageID())
                + ",\"body\":" + json(body) + "}");
        } catch (Exception e) {
            emit("{\"event\":\"error\",\"message\":" + json(e.toString()) + "}");
        }
    }

    private static Message body(Session session, String text, boolean asBytes) throws Exception {
        if (!asBytes) return session.createTextMessage(text);
        BytesMessage message = session.createBytesMessage();
        message.writeBytes(text.getBytes(StandardCharsets.UTF_8));
        return message;
    }

    private static Destination destination(Session session, String spec) throws Exception {
        if (spec.startsWith("queue:")) return session.createQueue(spec.substring(6));
        if (spec.startsWith("topic:")) return session.createTopic(spec.substring(6));
        throw new IllegalArgumentException("destination must start with queue: or topic:, not " + spec);
    }

    private static String text(String b64) {
        return new String(Base64.getDecoder().decode(b64), StandardCharsets.UTF_8);
    }

    private static synchronized void emit(String line) {
        OUT.println(line);
    }

    private static String json(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                default:
                    if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
                    else b.append(c);
            }
        }
        return b.append('"').toString();
    }
}
