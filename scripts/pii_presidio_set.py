"""A labelled PII set written by others: sentences from Microsoft Presidio's evaluation data
generator (the `presidio-evaluator` package, its own templates and Faker-based values), in the
format `switchyard pii-eval --input` reads. The "independent set" of docs/privacy.md.

PresidioSentenceFaker fills Presidio's sentence templates (addresses, names, organisations,
phone numbers, cards...) with fake values and records each value's entity type. The types
switchyard detects become its kinds (EMAIL_ADDRESS -> email, PHONE_NUMBER -> phone,
CREDIT_CARD -> credit_card, IBAN_CODE -> iban, US_SSN -> national_id, IP_ADDRESS ->
ip_address); every other type (names, addresses, dates, ages, zip codes, driver's licences,
domains...) stays unlabelled, so a detection on one counts against precision. The templates
write some line breaks as the two characters `\\n`; they are written as line breaks.

Needs `presidio-evaluator` in a venv of its own (it pulls spaCy and pandas):

    python3 -m venv ~/.cache/switchyard/pii-research
    ~/.cache/switchyard/pii-research/bin/pip install presidio-evaluator==0.3.2
    ~/.cache/switchyard/pii-research/bin/python scripts/pii_presidio_set.py --out presidio.jsonl
    switchyard pii-eval --input presidio.jsonl
"""

import argparse
import collections
import json
import sys

KINDS = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "CREDIT_CARD": "credit_card",
    "IBAN_CODE": "iban",
    "US_SSN": "national_id",
    "IP_ADDRESS": "ip_address",
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the set to write (JSONL)")
    ap.add_argument("--sentences", type=int, default=5000, help="sentences to generate")
    ap.add_argument("--seed", type=int, default=42, help="the generator's random seed")
    args = ap.parse_args()
    from presidio_evaluator.data_generator import PresidioSentenceFaker
    from presidio_evaluator.data_generator.faker_extensions import HospitalProvider
    from presidio_evaluator.data_generator.presidio_sentence_faker import (
        presidio_additional_entity_providers)

    # Every provider but hospitals', which downloads its names (no template uses them), so the
    # set is the same with or without a network.
    providers = [p for p in presidio_additional_entity_providers if p is not HospitalProvider]
    faker = PresidioSentenceFaker("en_US", lower_case_ratio=0.05, random_seed=args.seed,
                                  entity_providers=providers)
    samples = faker.generate_new_fake_sentences(args.sentences)
    counts = collections.Counter()
    with open(args.out, "w", encoding="utf-8") as f:
        for s in samples:
            # The value as the sentence has it (the recorded `entity_value` can differ in case).
            spans = [{"kind": KINDS[x.entity_type],
                      "value": s.full_text[x.start_position:x.end_position]}
                     for x in s.spans if x.entity_type in KINDS]
            # The templates write line breaks as the two characters `\n`.
            text = s.full_text.replace("\\n", "\n")
            counts.update(x["kind"] for x in spans)
            f.write(json.dumps({"text": text, "spans": spans}) + "\n")
    print(f"{len(samples)} sentences, labelled values: {dict(counts)}", file=sys.stderr)


if __name__ == "__main__":
    main()
