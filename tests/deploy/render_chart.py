"""Renders a Helm chart offline with Helm's own engine, as `helm template`
would, and lints it: tests/deploy.rs reads the JSON this prints.

    render_chart.py CHART [VALUES.yaml] --release NAME --namespace NS

Prints {"manifests": {template path: rendered text}, "lint": report}.
"""

import argparse
import json
import sys

import helm_python as helm


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("chart")
    parser.add_argument("values", nargs="?")
    parser.add_argument("--release", required=True)
    parser.add_argument("--namespace", required=True)
    args = parser.parse_args()

    values = {}
    if args.values:
        with open(args.values, encoding="utf-8") as f:
            values = helm.values_from_yaml(f.read())
    chart = helm.Chart.load(args.chart)
    manifests = chart.render(
        values,
        name=args.release,
        namespace=args.namespace,
        revision=1,
        is_install=True,
    )
    report = helm.lint(args.chart, values, strict=True, namespace=args.namespace)
    json.dump({"manifests": manifests, "lint": report}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
