"""Realistic CVP traffic: call flows, system events and syslog lines, as the document shapes them.

A call goes started -> application invoked -> (queued -> transferred to an
agent | abandoned in queue) or self-service completion, with occasional
call errors; around the calls the platform raises threshold alerts,
device and service state changes and a configuration deployment.  Calls
overlap (a few are in progress at once), as on a real Call Server, and each
call's own events stay in order.

Every item is ``(channel key, payload)``; :func:`syslog_lines` gives the
syslog messages CVP would forward for the same traffic.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Item", "call_flow", "contact_center", "malformed", "syslog_lines", "system_events"]

Item = tuple[str, dict[str, Any]]

SKILL_GROUPS = ("Sales", "Support", "Billing", "Retention")
APPLICATIONS = ("MainMenu", "SelfServiceBalance", "CollectAccount", "PaymentIVR")
CALL_SERVERS = ("cvp-cs-01.example.com", "cvp-cs-02.example.com")
VXML_SERVERS = ("cvp-vxml-01.example.com", "cvp-vxml-02.example.com")


def _ts(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def call_flow(rng: random.Random, start: datetime, outcome: str | None = None) -> list[Item]:
    """One call's events; ``outcome``: ``agent``, ``abandoned``, ``self_service`` or ``error``."""
    outcome = outcome or rng.choices(
        ("agent", "abandoned", "self_service", "error"), weights=(55, 20, 20, 5)
    )[0]
    guid = uuid.UUID(int=rng.getrandbits(128)).hex.upper()
    caller = f"+1555{rng.randrange(10**7):07d}"
    dnis = rng.choice(("8005550100", "8005550199"))
    server = rng.choice(CALL_SERVERS)
    app = rng.choice(APPLICATIONS)
    clock = start
    base = {"callGuid": guid, "callingNumber": caller, "calledNumber": dnis}

    def at(seconds: float) -> str:
        nonlocal clock
        clock += timedelta(seconds=seconds)
        return _ts(clock)

    items: list[Item] = [
        ("calls_started", {"eventType": "call.started", "timestamp": at(0), **base,
                           "callServerHostname": server,
                           "sipCallId": f"{uuid.UUID(int=rng.getrandbits(128))}@10.10.1.20",
                           "ingressGateway": "cube-01.example.com", "matchedPattern": "800555>"}),
        ("calls_application_invoked", {"eventType": "call.application_invoked",
                                       "timestamp": at(0.3), "callGuid": guid,
                                       "applicationName": app,
                                       "vxmlServerHostname": rng.choice(VXML_SERVERS),
                                       "sessionId": f"{rng.choice(VXML_SERVERS)[:11]}-"
                                                    f"{rng.randrange(10**9)}"}),
    ]
    ivr = rng.randint(20, 120)
    if outcome == "self_service":
        items.append(("calls_ended", {"eventType": "call.ended", "timestamp": at(ivr), **base,
                                      "callResult": "completed", "callDuration": ivr,
                                      "selfServiceDuration": ivr, "queueDuration": 0,
                                      "applicationName": app,
                                      "terminationReason": "caller_hangup",
                                      "sipResponseCode": 200}))
        return items
    if outcome == "error":
        items.append(("calls_error", {"eventType": "call.error", "timestamp": at(ivr),
                                      "callGuid": guid, "errorCode": "CVP-ICM-0012",
                                      "errorMessage": "No response from ICM within 5000 ms",
                                      "errorCategory": "icm_communication",
                                      "serverHostname": server}))
        items.append(("calls_ended", {"eventType": "call.ended", "timestamp": at(1), **base,
                                      "callResult": "error", "callDuration": ivr + 1,
                                      "selfServiceDuration": ivr, "queueDuration": 0,
                                      "applicationName": app,
                                      "terminationReason": "icm_timeout",
                                      "sipResponseCode": 503}))
        return items
    group = rng.choice(SKILL_GROUPS)
    items.append(("calls_queued", {"eventType": "call.queued", "timestamp": at(ivr), **base,
                                   "skillGroup": group,
                                   "estimatedWaitTime": rng.randint(10, 300),
                                   "queuePosition": rng.randint(1, 12),
                                   "queueApplication": "HoldMusic"}))
    wait = rng.randint(5, 400)
    if outcome == "abandoned":
        items.append(("calls_ended", {"eventType": "call.ended", "timestamp": at(wait), **base,
                                      "callResult": "abandoned", "callDuration": ivr + wait,
                                      "selfServiceDuration": ivr, "queueDuration": wait,
                                      "applicationName": app,
                                      "terminationReason": "caller_hangup_in_queue",
                                      "sipResponseCode": 487}))
        return items
    agent = f"{rng.randint(1000, 1099)}"
    items.append(("calls_transferred", {"eventType": "call.transferred", "timestamp": at(wait),
                                        **base, "transferDestination": agent,
                                        "transferType": rng.choice(("blind", "consultation")),
                                        "icmLabel": f"LBL_{group.upper()}_{agent}",
                                        "skillGroup": group}))
    talk = rng.randint(30, 900)
    items.append(("calls_ended", {"eventType": "call.ended", "timestamp": at(talk), **base,
                                  "callResult": "transferred", "callDuration": ivr + wait + talk,
                                  "selfServiceDuration": ivr, "queueDuration": wait,
                                  "applicationName": app, "terminationReason": "normal_clearing",
                                  "sipResponseCode": 200}))
    return items


def system_events(rng: random.Random, start: datetime) -> list[Item]:
    """A threshold alert, a device going to maintenance and back, a service error, a deployment."""
    host = rng.choice(CALL_SERVERS)
    device = host.split(".", 1)[0].upper()
    t = [_ts(start + timedelta(seconds=s)) for s in range(6)]
    return [
        ("threshold_exceeded", {"eventType": "system.threshold_exceeded", "timestamp": t[0],
                                "deviceId": device, "hostname": host, "metric": "cpu_usage",
                                "thresholdValue": 85, "currentValue": round(rng.uniform(86, 99), 1),
                                "severity": rng.choice(("warning", "critical"))}),
        ("device_status_changed", {"eventType": "system.device_status_changed", "timestamp": t[1],
                                   "deviceId": "VXML-02", "hostname": VXML_SERVERS[1],
                                   "deviceType": "VXMLServer", "previousStatus": "online",
                                   "currentStatus": "maintenance",
                                   "reason": "Scheduled patching"}),
        ("service_state_changed", {"eventType": "system.service_state_changed", "timestamp": t[2],
                                   "deviceId": device, "hostname": host,
                                   "serviceName": "CVP Reporting Service",
                                   "previousState": "running", "currentState": "error",
                                   "message": "Database connection pool exhausted"}),
        ("config_deployed", {"eventType": "deployment.config_deployed", "timestamp": t[3],
                             "operationId": f"deploy-{rng.randrange(10**6):06d}",
                             "status": "partial_success",
                             "targetDevices": [
                                 {"deviceId": "CS-01", "hostname": CALL_SERVERS[0],
                                  "status": "success"},
                                 {"deviceId": "CS-02", "hostname": CALL_SERVERS[1],
                                  "status": "failed", "message": "Device unreachable"}],
                             "initiatedBy": "admin"}),
        ("device_status_changed", {"eventType": "system.device_status_changed", "timestamp": t[4],
                                   "deviceId": "VXML-02", "hostname": VXML_SERVERS[1],
                                   "deviceType": "VXMLServer", "previousStatus": "maintenance",
                                   "currentStatus": "online", "reason": "Patching complete"}),
        ("service_state_changed", {"eventType": "system.service_state_changed", "timestamp": t[5],
                                   "deviceId": device, "hostname": host,
                                   "serviceName": "CVP Reporting Service",
                                   "previousState": "error", "currentState": "running"}),
    ]


def contact_center(calls: int = 20, *, seed: int | None = None, concurrent: int = 4,
                   start: datetime | None = None) -> list[Item]:
    """``calls`` overlapping call flows (every outcome at least once if calls >= 4) and the
    system events, interleaved: each call's events in order."""
    rng = random.Random(seed)
    start = start or datetime.now(UTC)
    outcomes = ["agent", "abandoned", "self_service", "error"]
    flows: list[Iterator[Item]] = [
        iter(call_flow(rng, start, outcomes[n] if n < len(outcomes) else None))
        for n in range(calls)
    ]
    out: list[Item] = list(system_events(rng, start)[:3])
    active = [flows.pop(0) for _ in range(min(concurrent, len(flows)))]
    while active:
        current = rng.choice(active)
        item = next(current, None)
        if item is None:
            active.remove(current)
            if flows:
                active.append(flows.pop(0))
            continue
        out.append(item)
    out.extend(system_events(rng, start)[3:])
    return out


def malformed() -> list[tuple[str, str]]:
    """Bodies a broken publisher might send, each with the reason the source gives it."""
    now = _ts(datetime.now(UTC))
    return [
        ("calls_started", "{not json"),
        ("calls_started", '{"eventType": "call.started", "timestamp": "' + now + '"}'),
        ("calls_ended", '{"eventType": "call.ended", "timestamp": "' + now + '", '
                        '"callGuid": "X1", "callResult": "hung_up"}'),
        ("calls_queued", '{"eventType": "call.queued", "timestamp": "' + now + '", '
                         '"callGuid": "X2", "queuePosition": "third"}'),
        ("calls_started", '{"eventType": "call.ended", "timestamp": "' + now + '", '
                          '"callGuid": "X3", "callResult": "completed"}'),
        ("threshold_exceeded", '{"eventType": "system.reboot", "timestamp": "' + now + '"}'),
        ("calls_started", "[1, 2, 3]"),
    ]


#: syslog severity of each channel's line (err for errors, warning for alerts ...).
_SYSLOG = {"calls_error": 3, "threshold_exceeded": 4, "service_state_changed": 4,
           "device_status_changed": 5, "config_deployed": 5}


def syslog_lines(items: list[Item], *, hostname: str = "cvp-cs-01") -> list[bytes]:
    """The syslog messages CVP would send for ``items`` (system events and call errors):
    RFC 5424 with a ``cvp@9`` structured-data element for some, RFC 3164 for the rest."""
    lines: list[bytes] = []
    for n, (key, payload) in enumerate(items):
        severity = _SYSLOG.get(key)
        if severity is None:
            continue
        pri = 8 * 20 + severity  # local4
        text = {
            "calls_error": lambda p: f"%CVP_12_6_ICM-3-CALL_ERROR: {p['errorCode']} "
                                     f"{p.get('errorMessage', '')}",
            "threshold_exceeded": lambda p: f"%CVP_12_6_SYS-4-THRESHOLD: {p['metric']} "
                                            f"{p['currentValue']} > {p['thresholdValue']}",
            "service_state_changed": lambda p: f"%CVP_12_6_SVC-4-STATE: {p['serviceName']} "
                                               f"{p['previousState']} -> {p['currentState']}",
            "device_status_changed": lambda p: f"%CVP_12_6_DEV-5-STATUS: {p['deviceId']} "
                                               f"{p['previousStatus']} -> {p['currentStatus']}",
            "config_deployed": lambda p: f"%CVP_12_6_OAMP-5-DEPLOY: {p['operationId']} "
                                         f"{p['status']}",
        }[key](payload)
        host = payload.get("hostname") or payload.get("serverHostname") or hostname
        if n % 2 == 0:
            sd_params = " ".join(
                f'{k}="{_sd_escape(str(payload[k]))}"'
                for k in ("eventType", "callGuid", "deviceId", "metric", "operationId")
                if k in payload
            )
            line = (f"<{pri}>1 {payload['timestamp']} {host} CVP - "
                    f"{key.upper()} [cvp@9 {sd_params}] {text}")
        else:
            now = datetime.now(UTC)
            stamp = f"{now:%b} {now.day:2d} {now:%H:%M:%S}"  # RFC 3164: "Nov  5 09:01:02"
            line = f"<{pri}>{stamp} {host} CVP[4242]: {text}"
        lines.append(line.encode("utf-8"))
    return lines


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
