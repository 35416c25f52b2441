#!/usr/bin/env python3
"""Writes the seed corpus under fuzz/seeds/<target>/ (run once from fuzz/;
the seeds are committed, so fuzzing never needs Python).

The seeds are the published vectors of /work/shared/PROVIDERS.md and the
providers' tests, plus a few requests signed here (Python's hmac module)
with the fixed secrets of fuzz/src/lib.rs `known_candidates`, so that the
fuzzer starts from requests that verify. Formats: fuzz/README.md.
"""
import base64
import hashlib
import hmac
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    folder = os.path.join(HERE, target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def request(headers, body=b""):
    """The `headers`/`json_identify` text format: header lines, an empty line, the body."""
    head = "".join(f"{name}: {value}\n" for name, value in headers) or "\n"
    return head.encode() + b"\n" + (body.encode() if isinstance(body, str) else body)


def hexmac(key, msg, algo=hashlib.sha256):
    return hmac.new(key.encode() if isinstance(key, str) else key, msg, algo).hexdigest()


def b64mac(key, msg, algo=hashlib.sha256):
    digest = hmac.new(key.encode() if isinstance(key, str) else key, msg, algo).digest()
    return base64.b64encode(digest).decode()


STRIPE_BODY = '{"id":"evt_test_webhook","object":"event"}'
SW_BODY = '{"test": 2432232314}'
SLACK_BODY = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_FORM = "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212"
SQUARE_BODY = '{"data":{"type":"webhooks","id":"fake_id"}}'
DISCORD_SIG = "c1098e97d711377f30225d53d94b89d43537f92e5b3afaddc590781b1f9f9d4b2eeab335d370be3b9a090bc61a85b86448bc140dcd195f1569c2bff181257607"
SENDGRID_BODY = '{"category":"example_payload","event":"test_event","message_id":"message_id"}'
SENDGRID_SIG = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0="
PAYPAL_BODY = '{"id":"WH-2WR32451HC0233532-67976317FL4543714","event_type":"PAYMENT.SALE.COMPLETED","resource":{"id":"4RR959492F879224U"}}'
PAYPAL_SIG = "ByN4TiTIyaIH/EpkSyJH+cSIXFVNMGGy/Bcygd4nGKz0dyxZJNaQPGTPFEXrL6wjkV/s5r4tDguC01B8+mcmpunRd8si3aeeHFwZWyRzGLUwkqsBfbJgBsaxYlt7fF8SMGqWdWasMCx3PW4TCUZ+9CstXZrwp3cEpq4kGla7dd+EtGAETlu1HuZhh+oQSZRjVnDKo6qgnFsGVYhIwba24ZSPBUbQe+3LzrMa9ZUajAc/92h8W0V2qRLhNiWqzudr2MQG/S2Ht08ipfiSpDuWQP6myjPBA64UQrdkYDgHmKJ9uLuIKtYuQ0VpJ+hI8X0SG7MxqBRXM+PTUNGnnnj3Eg=="
ZOOM_BODY = '{"event":"meeting.started","payload":{"account_id":"D8cJuqWVQ623CI4Q8yQK0Q","object":{"id":"89712345678"}},"event_ts":1700000000123}'
SHOPIFY_BODY = '{"id":820982911946154508,"email":"jon@example.com","topic":"orders/create"}'
GRAPH_BODY = json.dumps({"value": [{"subscriptionId": "s1", "clientState": "graph-client-state", "changeType": "created",
                                     "resource": "users/1", "tenantId": "t1"}]})
LINEAR_BODY = '{"action":"create","type":"Issue","data":{"id":"i1"},"webhookTimestamp":1700000000000}'
MAILGUN_TOKEN = "c0ffee0123456789abcdef0123456789abcdef0123456789ab"
MAILGUN_BODY = json.dumps({"signature": {"timestamp": "1700000000", "token": MAILGUN_TOKEN,
                                         "signature": hexmac("mailgun-signing-key", ("1700000000" + MAILGUN_TOKEN).encode())},
                           "event-data": {"event": "delivered", "id": "e1"}})


def headers_seeds():
    t = "headers"
    write(t, "stripe", request([("@now", "1700000000"), ("stripe-signature",
          "t=1700000000,v1=d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990")], STRIPE_BODY))
    write(t, "github", request([("x-hub-signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
                               ("x-github-event", "push"), ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")],
                               "Hello, World!"))
    write(t, "standard-webhooks", request([("@now", "1614265330"), ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
                                          ("webhook-timestamp", "1614265330"),
                                          ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")], SW_BODY))
    write(t, "slack", request([("@now", "1531420618"), ("x-slack-request-timestamp", "1531420618"),
                              ("x-slack-signature", "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
                              ("content-type", "application/x-www-form-urlencoded")], SLACK_BODY))
    write(t, "twilio", request([("@url", TWILIO_URL), ("x-twilio-signature", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
                               ("content-type", "application/x-www-form-urlencoded")], TWILIO_FORM))
    write(t, "square", request([("@url", "https://webhook.site/webhooks"),
                               ("x-square-hmacsha256-signature", "W3FlCNk5IA3ZQ2LHTWoajvzfaDu/OwY2tNHIHC3IUOA=")], SQUARE_BODY))
    write(t, "discord", request([("@now", "1700000000"), ("x-signature-ed25519", DISCORD_SIG),
                                ("x-signature-timestamp", "1700000000")], '{"type":1}'))
    write(t, "sendgrid", request([("@now", "1588788367"), ("x-twilio-email-event-webhook-signature", SENDGRID_SIG),
                                 ("x-twilio-email-event-webhook-timestamp", "1588788367")], SENDGRID_BODY))
    write(t, "paypal", request([("paypal-transmission-id", "69cd13f0-d67a-11e5-baa3-778b53f4ae55"),
                               ("paypal-transmission-time", "2016-02-18T20:01:35Z"),
                               ("paypal-transmission-sig", PAYPAL_SIG),
                               ("paypal-cert-url", "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-1d93a270"),
                               ("paypal-auth-algo", "SHA256withRSA")], PAYPAL_BODY))
    write(t, "zoom", request([("x-zm-request-timestamp", "1700000000"),
                             ("x-zm-signature", "v0=e6a615bc7577c368af75810d5e34e75ce9cbcc0bd31dc06a29894a9802044bbd")], ZOOM_BODY))
    write(t, "shopify", request([("x-shopify-hmac-sha256", "dxgROyP4fNrQDwPAlJLllgo+oUbnsrg56cZwhdUqB+E="),
                                ("x-shopify-topic", "orders/create"), ("x-shopify-webhook-id", "b54557e4")], SHOPIFY_BODY))
    write(t, "gitlab", request([("x-gitlab-token", "gitlab-hook-s3cr3t"), ("x-gitlab-event", "Push Hook"),
                               ("idempotency-key", "908a6d9e-45fd-46c8-97e6-c4f350f219dd")], '{"object_kind":"push"}'))
    write(t, "dropbox-challenge", request([("@method", "GET"), ("@url", "https://gatehouse.test/in/dropbox?challenge=abc%20123")]))
    write(t, "graph-validation", request([("@url", "https://gatehouse.test/in/graph?validationToken=Validation%3A+Testing+client+application")]))
    write(t, "linear", request([("@now-ms", "1700000000500"), ("linear-signature", hexmac("linear-webhook-secret", LINEAR_BODY.encode())),
                               ("linear-delivery", "d-1")], LINEAR_BODY))
    write(t, "intercom", request([("x-hub-signature", "sha1=" + hexmac("intercom-client-secret", b'{"topic":"ping","id":"n1"}', hashlib.sha1))],
                                 '{"topic":"ping","id":"n1"}'))
    write(t, "mailgun", request([], MAILGUN_BODY))
    write(t, "graph-batch", request([], GRAPH_BODY))
    write(t, "hmac-timestamp", request([("x-timestamp", "1700000000"),
                                       ("x-signature", b64mac("k", b"1700000000.{}", hashlib.sha512))], "{}"))


def json_identify_seeds():
    t = "json_identify"
    write(t, "slack-url-verification", '{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}')
    write(t, "slack-event-callback", '{"type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"app_mention","text":"hi"},"team_id":"T1"}')
    write(t, "slack-interactivity", request([("content-type", "application/x-www-form-urlencoded")],
          "payload=%7B%22type%22%3A%22block_actions%22%2C%22trigger_id%22%3A%2213345224609.738474920.8088930838d88f008e0%22%7D"))
    write(t, "zoom-validation", '{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}')
    write(t, "discord-command", '{"id":"1180000000000000000","type":2,"data":{"name":"deploy"},"token":"t"}')
    write(t, "discord-event", '{"version":1,"application_id":"1","type":1,"event":{"type":"APPLICATION_AUTHORIZED","data":{}}}')
    write(t, "github-form", request([("content-type", "application/x-www-form-urlencoded"), ("x-github-event", "pull_request")],
          "payload=%7B%22action%22%3A%22opened%22%7D"))
    write(t, "twilio-status", request([("content-type", "application/x-www-form-urlencoded")],
          "MessageSid=SM0123&SmsSid=SM0123&MessageStatus=delivered&SmsStatus=delivered&AccountSid=AC1"))
    write(t, "twilio-events", request([("@url", "https://x.test/in?bodySHA256=00")],
          '[{"specversion":"1.0","type":"com.twilio.messaging.message.delivered","id":"EZ1"}]'))
    write(t, "sendgrid-batch", '[{"sg_event_id":"e1","event":"delivered","email":"a@example.com"},{"event":"open"}]')
    write(t, "graph-batch", GRAPH_BODY)
    write(t, "mailgun", MAILGUN_BODY)
    write(t, "paypal", PAYPAL_BODY)
    write(t, "linear", LINEAR_BODY)
    write(t, "stripe", '{"id":"evt_1","type":"payment_intent.succeeded","id":2,"data":{"object":{}}}')


def lines(*parts, body=b""):
    out = b""
    for part in parts:
        out += (part.encode() if isinstance(part, str) else part) + b"\n"
    return out + (body.encode() if isinstance(body, str) else body)


def flags(f0=0, f1=0, f2=0, f3=0):
    data = bytes([f0, f1, f2, f3])
    assert b"\n" not in data
    return data


def hmac_family_seeds():
    t = "hmac_family"
    write(t, "stripe", lines("stripe", "1700000000", "0", flags(), "whsec_test_secret", "", body=STRIPE_BODY))
    write(t, "github-rotation", lines("github", "", "", flags(0, 1, 3), "It's a Secret to Everybody", "", body="Hello, World!"))
    write(t, "standard-webhooks", lines("standard-webhooks", "1614265330", "-300", flags(0b0100_0000), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                                        "msg_p5jXN8AQM9LWM0D4loKWxJek", body=SW_BODY))
    write(t, "svix", lines("standard-webhooks", "1614265330", "12", flags(0b0011_0000, 1), "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_1",
                           body='{"type":"invoice.paid"}'))
    write(t, "hmac-preset-timestamp", lines("hmac", "1700000000", "299", flags(0b0000_0110), "k", "2", body="{}"))
    write(t, "hmac-options", lines("hmac", "1700000000", "0", flags(), "key", "X-Sig|sha1|base64|sig=|X-Ts|{timestamp}:{body}",
                                   body="a=b"))
    write(t, "slack", lines("slack", "1531420618", "0", flags(), "8f742231b10e8888abcd99yyyzzz85a5", "", body=SLACK_BODY))
    write(t, "zoom-validation", lines("zoom", "1700000000", "1", flags(0b0001_0000, 1), "zoom-secret-token", "qgg8vlvZRS6UYooatFL8Aw", body=""))
    write(t, "shopify", lines("shopify", "", "", flags(0b0001_0000), "shpss_test_client_secret", "", body=SHOPIFY_BODY))
    write(t, "square-configured-url", lines("square", "", "", flags(0b0001_0000), "Ibxx_5AKakO-3qeNVR61Dw",
                                            "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9", body=SQUARE_BODY))
    write(t, "twilio-form", lines("twilio", "", "", flags(), "12345", TWILIO_URL, body=TWILIO_FORM))
    write(t, "twilio-json-sha256", lines("twilio", "", "", flags(0b0110_0000), "12345", TWILIO_URL,
                                         body='{"property": "value", "boolean": true}'))
    write(t, "linear", lines("linear", "1700000000", "-59", flags(0b0001_0000, 0, 0, 100), "linear-webhook-secret", "",
                             body='{"id":"i1"}'))
    write(t, "intercom", lines("intercom", "", "", flags(), "intercom-client-secret", "", body='{"topic":"ping","id":"n1"}'))
    write(t, "dropbox", lines("dropbox", "", "", flags(), "dropbox-app-secret", "", body='{"list_folder":{"accounts":["dbid:1"]}}'))
    write(t, "mailgun", lines("mailgun", "1700000000", "900", flags(), "mailgun-signing-key", MAILGUN_TOKEN, body="note"))


def token_family_seeds():
    t = "token_family"
    write(t, "token", lines("token", flags(), "glpat-s3cr3t-token", "", body='{"id":"e1","type":"push"}'))
    write(t, "token-header", lines("token-header", flags(1, 3, 1), "s3cr3t", "X-Webhook-Token", body=""))
    write(t, "gitlab-dedup", lines("gitlab", flags(0b0000_1110), "gitlab-hook-s3cr3t", "908a6d9e-45fd-46c8-97e6-c4f350f219dd",
                                   body='{"object_kind":"push"}'))
    write(t, "microsoft-graph", lines("microsoft-graph", flags(1), "graph-client-state", "updated", body="intruder"))


def asymmetric_seeds():
    t = "asymmetric"
    write(t, "discord", lines("discord", "1700000000", "0", flags(), "", body='{"type":1}'))
    write(t, "discord-rotation", lines("discord", " 1700000000 ", "-300", flags(0b0001_0001, 5, 2, 1), "seed", body='{"type":2,"id":"1"}'))
    write(t, "sendgrid", lines("sendgrid", "1588788367", "1", flags(0b0001_0000), "", body=SENDGRID_BODY))
    write(t, "paypal", lines("paypal", "2016-02-18T20:01:35Z", "0", flags(), "69cd13f0-d67a-11e5-baa3-778b53f4ae55", body=PAYPAL_BODY))
    write(t, "paypal-tolerance", lines("paypal", "2023-11-14T22:13:20.5+00:00", "300", flags(0b0000_0110), "id-1", body=PAYPAL_BODY))


if __name__ == "__main__":
    headers_seeds()
    json_identify_seeds()
    hmac_family_seeds()
    token_family_seeds()
    asymmetric_seeds()
