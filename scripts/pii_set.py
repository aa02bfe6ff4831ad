#!/usr/bin/env python3
"""Writes the labelled private-data set that `switchyard pii-eval` scores (tests/data/pii.jsonl).

Every value is synthetic: card numbers are built to pass Luhn, IBANs to pass the ISO 13616
checksum, ids to follow their issuing rules; none belongs to anyone. Rows are
{"text": ..., "spans": [{"kind": ..., "value": ...}]}; a row without spans is a hard negative
(order numbers, ISBNs, versions, UUIDs, sums, dates, hashes...). The set is fixed by its seed:
run `python3 scripts/pii_set.py > tests/data/pii.jsonl` to rebuild it.
"""

import json
import random
import string

rng = random.Random(20261130)


def luhn_complete(prefix, length):
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, c in enumerate(reversed(body)):
        d = int(c)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


def card():
    prefix, length = rng.choice(
        [("4", 16), ("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
         ("6011", 16), ("65", 16), ("3530", 16), ("36", 14), ("62", 16)])
    n = luhn_complete(prefix, length)
    style = rng.choice(["plain", "space", "dash"])
    if style == "plain":
        return n
    sep = " " if style == "space" else "-"
    if length == 15:
        return sep.join([n[:4], n[4:10], n[10:]])
    return sep.join(n[i:i + 4] for i in range(0, len(n), 4))


IBAN_FORMATS = {  # country: (length, bban generator)
    "DE": (22, lambda: digits(18)),
    "GB": (22, lambda: letters(4) + digits(14)),
    "FR": (27, lambda: digits(10) + alnum(11) + digits(2)),
    "NL": (18, lambda: letters(4) + digits(10)),
    "ES": (24, lambda: digits(20)),
    "IT": (27, lambda: letters(1) + digits(10) + alnum(12)),
    "CH": (21, lambda: digits(5) + alnum(12)),
    "BE": (16, lambda: digits(12)),
}


def digits(n):
    return "".join(rng.choice(string.digits) for _ in range(n))


def letters(n):
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def alnum(n):
    return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(n))


def iban():
    country = rng.choice(list(IBAN_FORMATS))
    _, gen = IBAN_FORMATS[country]
    bban = gen()
    moved = bban + country + "00"
    num = int("".join(str(int(c, 36)) for c in moved))
    check = 98 - num % 97
    value = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        value = " ".join(value[i:i + 4] for i in range(0, len(value), 4))
    return value


def ssn():
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def nino():
    first = rng.choice("ABCEGHJKLMNOPRSTWXYZ")
    second = rng.choice("ABCEGHJKLMNPRSTWXYZ")
    if first + second in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
        first, second = "A", "B"
    d = digits(6)
    if rng.random() < 0.5:
        return f"{first}{second}{d}{rng.choice('ABCD')}"
    return f"{first}{second} {d[:2]} {d[2:4]} {d[4:]} {rng.choice('ABCD')}"


def dni():
    if rng.random() < 0.7:
        n = digits(8)
        return n + "TRWAGMYFPDXBNJZSQVHLCKE"[int(n) % 23]
    lead = rng.choice("XYZ")
    n = digits(7)
    return lead + n + "TRWAGMYFPDXBNJZSQVHLCKE"[int(str("XYZ".index(lead)) + n) % 23]


def national_id():
    return rng.choice([ssn, ssn, nino, dni])()


FIRST = ["anna", "bob", "chen", "dmitri", "eva", "farah", "gus", "hana", "ivan", "jo"]
LAST = ["smith", "garcia", "muller", "okafor", "tanaka", "rossi", "novak", "kaur"]
DOMAINS = ["example.com", "example.org", "mail.example.net", "corp.example.co.uk", "example.io"]


def email():
    f, l = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice([f"{f}.{l}", f"{f}{rng.randint(1, 99)}", f"{f[0]}{l}", f"{f}+news", f"{l}_{f}"])
    e = f"{local}@{rng.choice(DOMAINS)}"
    return e.upper() if rng.random() < 0.1 else e


def phone():
    return rng.choice([
        lambda: f"+1 {rng.randint(201, 989)} 555 {rng.randint(100, 199):04d}",
        lambda: f"+1-{rng.randint(201, 989)}-555-{rng.randint(100, 199):04d}",
        lambda: f"({rng.randint(201, 989)}) 555-{rng.randint(100, 199):04d}",
        lambda: f"{rng.randint(201, 989)}-555-{rng.randint(100, 199):04d}",
        lambda: f"+44 20 7946 {rng.randint(0, 999):04d}",
        lambda: f"+44 7700 900{rng.randint(0, 999):03d}",
        lambda: f"+49 30 {rng.randint(1000000, 9999999)}",
        lambda: f"+33 1 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
        lambda: f"+81 3-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
        lambda: f"+91 {rng.randint(70000, 99999)} {rng.randint(10000, 99999)}",
    ])()


def ip():
    if rng.random() < 0.75:
        return rng.choice([
            lambda: f"203.0.113.{rng.randint(1, 254)}",
            lambda: f"198.51.100.{rng.randint(1, 254)}",
            lambda: f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            lambda: f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            lambda: f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        ])()
    groups = [f"{rng.randint(0, 0xffff):x}" for _ in range(4)]
    return rng.choice([
        f"2001:db8::{groups[0]}:{groups[1]}",
        f"2001:db8:{groups[0]}:{groups[1]}:{groups[2]}:{groups[3]}:1:2",
        f"fe80::{groups[0]}:{groups[1]}:{groups[2]}",
    ])


B62 = string.ascii_letters + string.digits


def rand(n, alphabet=B62):
    return "".join(rng.choice(alphabet) for _ in range(n))


def secret():
    return rng.choice([
        lambda: "sk-proj-" + rand(48),
        lambda: "sk-" + rand(48),
        lambda: "sk-ant-api03-" + rand(80, B62 + "-_"),
        lambda: "AKIA" + rand(16, string.ascii_uppercase + string.digits),
        lambda: "ghp_" + rand(36),
        lambda: "github_pat_" + rand(22) + "_" + rand(59),
        lambda: "xoxb-" + digits(12) + "-" + digits(12) + "-" + rand(24),
        lambda: "AIza" + rand(35, B62 + "-_"),
        lambda: "sk_live_" + rand(24),
        lambda: "hf_" + rand(34),
        lambda: "glpat-" + rand(20),
        lambda: rand(32),
        lambda: rand(40, B62 + "+/"),
    ])()


GEN = {"email": email, "phone": phone, "credit_card": card, "iban": iban,
       "national_id": national_id, "ip_address": ip, "secret": secret}

TEMPLATES = {
    "email": ["Please reply to {} with the invoice.", "My address is {}", "cc: {} on the thread",
              "Contact {}, she owns the account.", "Send it to <{}> tomorrow."],
    "phone": ["You can reach me at {} after 5pm.", "Call {} to confirm.", "phone: {}",
              "My number is {} if anything breaks.", "Support line ({}) is closed on Sundays? No: {}"],
    # Formats the detector is known to miss: a national number with no phone word near it.
    "phone_hard": ["Text me on {} when you land.", "reach the desk at {}", "{} (ask for Sam)"],
    "credit_card": ["Charge card {} for the renewal.", "card number: {} exp 09/29",
                    "I paid with {} but got no receipt.", "Refund it to {} please."],
    "iban": ["Wire the deposit to IBAN {}.", "Account {} (Sparkasse)", "Our IBAN: {}",
             "pay {} by Friday"],
    "national_id": ["My SSN is {}.", "national insurance {}", "DNI {} for the contract",
                    "id on file: {}", "Here is the number you asked for: {}"],
    "ip_address": ["The server at {} refuses SSH.", "ban {} from the firewall", "ssh -v {} hangs",
                   "login from {} was flagged", "curl -v {} fails"],
    "secret": ["My key is {} and it stopped working.", "export OPENAI_API_KEY={}",
               "Authorization: Bearer {}", 'config = {{"token": "{}"}}', "why does {} get a 401?"],
}

ASSIGNED_SECRETS = [
    ('password = "{}"', lambda: rand(6) + rng.choice("!#%&") + digits(3)),
    ("DB_PASSWORD={}", lambda: rand(10) + digits(2)),
    ("client_secret: {}", lambda: rand(20)),
    ("postgres://app:{}@db.internal:5432/prod", lambda: rand(12)),
]

NEGATIVES = [
    lambda: f"Order #{digits(10)} shipped on 2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}.",
    lambda: f"ISBN 978-{rng.randint(0, 9)}-{digits(3)}-{digits(5)}-{rng.randint(0, 9)} is out of print.",
    lambda: f"ISBN {9780000000000 + rng.randint(0, 99999999)}",
    lambda: f"Upgrade to version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}.{rng.randint(0, 99)} before Monday.",
    lambda: f"pip install torch=={rng.randint(1, 2)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}",
    lambda: f"request id {rand(8, '0123456789abcdef')}-{rand(4, '0123456789abcdef')}-4{rand(3, '0123456789abcdef')}-a{rand(3, '0123456789abcdef')}-{rand(12, '0123456789abcdef')}",
    lambda: f"The total is ${rng.randint(1000, 999999):,}.{rng.randint(0, 99):02d} for {rng.randint(2, 40)} seats.",
    lambda: f"Revenue grew from {rng.randint(1000000, 9000000):,} to {rng.randint(1000000, 9000000):,} units.",
    lambda: f"commit {rand(40, '0123456789abcdef')} broke the build",
    lambda: f"sha256: {rand(64, '0123456789abcdef')}",
    lambda: f"Meet at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} in room {rng.randint(100, 999)}.",
    lambda: f"color: #{rand(6, '0123456789abcdef')}; margin: {rng.randint(1, 40)}px",
    lambda: f"Tracking number 1Z{rand(16, string.ascii_uppercase + string.digits)}",
    lambda: f"Invoice INV-{digits(4)}-{digits(6)} is overdue.",
    lambda: f"What is {rng.randint(1000, 99999)} * {rng.randint(1000, 99999)}?",
    lambda: f"Solve x^2 + {rng.randint(2, 99)}x - {rng.randint(100, 9999)} = 0",
    lambda: f"Population in 2020: {rng.randint(100000000, 999999999)}",
    lambda: f"See src/components/{rng.choice(['User', 'Order', 'Cart'])}ProfileCard.tsx line {rng.randint(1, 500)}",
    lambda: f"Use the icon logo@{rng.randint(2, 3)}x.png on retina screens.",
    lambda: f"Decorate it with @{rng.choice(['property', 'staticmethod', 'dataclass'])} and call super().__init__()",
    lambda: "api_key = os.environ['OPENAI_API_KEY']",
    lambda: "password: <your-password-here>",
    lambda: "export OPENAI_API_KEY=${OPENAI_API_KEY}",
    lambda: f"Bind to 0.0.0.0:{rng.randint(1024, 65535)} or 127.0.0.1",
    lambda: "use std::collections::HashMap; fn main() { let x: std::io::Result<()> = Ok(()); }",
    lambda: f"Ticket JIRA-{rng.randint(100, 99999)}: the {rng.choice(['login', 'export', 'search'])} page times out",
    lambda: f"Call the function get_user({rng.randint(1, 99999)}) and log the result.",
    lambda: f"Coordinates {rng.uniform(-90, 90):.6f}, {rng.uniform(-180, 180):.6f}",
    lambda: f"The model scored {rng.uniform(0, 100):.2f}% on {rng.randint(1000, 20000)} questions.",
    lambda: f"Zip code {digits(5)}-{digits(4)}, suite {rng.randint(100, 999)}",
    lambda: f"Phone models: iPhone {rng.randint(11, 16)} Pro, Pixel {rng.randint(6, 9)}",
    lambda: f"Part no. {digits(3)}-{digits(3)}-{digits(3)} is back in stock",
    lambda: f"Run `kubectl scale deploy/api --replicas={rng.randint(2, 9)}`",
    lambda: f"Base64 of hello is aGVsbG8=, and {rng.randint(2, 9)} + {rng.randint(2, 9)} = ?",
    lambda: f"CamelCaseIdentifierForTheUserProfileSettingsPage{rng.randint(1, 9)} is too long",
    lambda: f"Pi to 20 places is 3.14159265358979323846",
    lambda: f"Timestamp 17{digits(8)} in ms is 17{digits(11)}",
]


def row(kind, value, template):
    return {"text": template.format(value) if template.count("{}") == 1 else template.format(value, value),
            "spans": [{"kind": kind, "value": value}] * (template.count("{}"))}


rows = []
for kind, gen in GEN.items():
    for i in range(60):
        value = gen()
        template = TEMPLATES[kind][i % len(TEMPLATES[kind])]
        rows.append(row(kind, value, template))
for i in range(30):
    value = rng.choice([f"020 7946 {rng.randint(0, 999):04d}", f"07700 900{rng.randint(0, 999):03d}",
                        f"030 {rng.randint(1000000, 9999999)}", f"01 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}"])
    rows.append(row("phone", value, TEMPLATES["phone_hard"][i % 3]))
for i in range(40):
    template, gen = ASSIGNED_SECRETS[i % len(ASSIGNED_SECRETS)]
    value = gen()
    rows.append({"text": template.format(value), "spans": [{"kind": "secret", "value": value}]})
for i in range(60):
    kinds = rng.sample(list(GEN), 2)
    a, b = GEN[kinds[0]](), GEN[kinds[1]]()
    rows.append({"text": f"Update my profile: {a}; also {b}.",
                 "spans": [{"kind": kinds[0], "value": a}, {"kind": kinds[1], "value": b}]})
for i in range(300):
    rows.append({"text": NEGATIVES[i % len(NEGATIVES)](), "spans": []})

rng.shuffle(rows)
for r in rows:
    print(json.dumps(r))
