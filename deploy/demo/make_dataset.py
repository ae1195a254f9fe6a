"""Writes the demo dataset: alpaca records for a small finance assistant, deterministic (seed 7).

The answers follow fixed templates computed from the numbers in the question, so a tiny model can
learn them in a few dozen steps and the quickstart shows a clearly falling loss.
Usage: python3 make_dataset.py > finance-alpaca-mini.jsonl
"""
import json
import random

rng = random.Random(7)


def simple_interest():
    p, r, t = rng.choice([500, 1000, 2000, 2500, 5000]), rng.choice([2, 3, 4, 5, 6]), rng.choice([1, 2, 3, 5])
    i = p * r * t // 100
    return ("Compute the simple interest.", f"Principal ${p}, rate {r}% per year, {t} years.",
            f"Interest = {p} x {r}% x {t} = ${i}. Total repaid: ${p + i}.")


def percent_change():
    a = rng.choice([40, 50, 80, 100, 120, 200, 250])
    b = a + rng.choice([-20, -10, 10, 20, 30, 50])
    pct = round((b - a) * 100 / a, 1)
    word = "increase" if b > a else "decrease"
    return ("What is the percentage change?", f"From {a} to {b}.",
            f"Change = ({b} - {a}) / {a} = {pct}%, a {abs(pct)}% {word}.")


def currency():
    usd, rate = rng.choice([10, 20, 50, 100, 250]), rng.choice([0.9, 0.8, 1.1, 1.5])
    return ("Convert the amount to euros.", f"{usd} USD at {rate} EUR per USD.",
            f"{usd} x {rate} = {round(usd * rate, 2)} EUR.")


def definition():
    term, text = rng.choice([
        ("a bond", "A bond is a loan to an issuer that pays interest and returns the principal at maturity."),
        ("a stock", "A stock is a share of ownership in a company."),
        ("inflation", "Inflation is the rise of the general price level over time."),
        ("a dividend", "A dividend is a payment a company makes to its shareholders from its profits."),
        ("diversification", "Diversification spreads money across assets so one loss hurts less."),
    ])
    return (f"Define {term} in one sentence.", "", text)


makers = [simple_interest, percent_change, currency, definition]
for _ in range(240):
    instruction, inp, output = rng.choice(makers)()
    print(json.dumps({"instruction": instruction, "input": inp, "output": output}))
