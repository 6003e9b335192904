"""Rebuild index.html (DVC's HTML template for `dvc plots show|diff`) from the published npm packages.

    cd "$(mktemp -d)" && npm pack vega@5 vega-lite@5 vega-embed@6 vega-typings@1
    python /path/to/repo/.dvc/plots/offline/build.py *.tgz

The minified builds of vega, vega-lite and vega-embed go inline into index.html, byte for byte
(so the page needs no network and no other file, wherever `dvc plots show -o` writes it); their
licence files go beside it, and README.md records versions and hashes (tests/test_dvc_plots.py
checks the inline scripts against them). The vega package ships no licence file: its licence is
the vega repository's, which vega-typings (same repository, same licence) carries.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILDS = {"vega": "package/build/vega.min.js", "vega-lite": "package/build/vega-lite.min.js",
          "vega-embed": "package/build/vega-embed.min.js"}
LICENCE_FROM = {"vega": "vega-typings", "vega-lite": "vega-lite", "vega-embed": "vega-embed"}

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {{refresh_tag}}
    <title>DVC plots (hidden-spaces)</title>
    <!-- No placeholder for DVC's script tags on purpose: they would load from a CDN.
         vega, vega-lite and vega-embed are inline below (see README.md beside this file). -->
{inline}
    <style>
        body {{ font-family: sans-serif; margin: 12px; }}
        table {{ border-spacing: 15px; }}
        /* DVC's image plots (the div DVC styles "white-space: nowrap"): the title, then one box
           per revision side by side, sharing the page width; images scale down to fit */
        div[style*="nowrap"] {{ display: flex; flex-wrap: wrap; align-items: flex-start;
                               justify-content: center; white-space: normal !important; }}
        div[style*="nowrap"] > p {{ flex: 0 0 100%; }}
        div[style*="nowrap"] > div {{ flex: 0 1 auto; min-width: 0; box-sizing: border-box; }}
        img {{ max-width: 100%; height: auto; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def _member(tgz: Path, name: str) -> bytes:
    with tarfile.open(tgz) as tar:
        return tar.extractfile(name).read()


def main(tarballs: list[str]) -> None:
    found: dict[str, tuple[Path, dict]] = {}
    for path in map(Path, tarballs):
        meta = json.loads(_member(path, "package/package.json"))
        found[meta["name"]] = (path, meta)
    missing = [n for n in (*BUILDS, *LICENCE_FROM.values()) if n not in found]
    if missing:
        sys.exit(f"error: missing npm tarballs for {', '.join(missing)}; run: npm pack vega@5 vega-lite@5 "
                 f"vega-embed@6 vega-typings@1")
    blocks, rows = [], []
    for name, member in BUILDS.items():
        path, meta = found[name]
        js = _member(path, member).decode("utf-8")
        if "</script" in js.lower():
            sys.exit(f"error: {name} {member} contains '</script': it cannot go inline")
        digest = hashlib.sha256(js.encode("utf-8")).hexdigest()
        blocks.append(f'    <script data-package="{name}@{meta["version"]}" data-file="{member[len("package/"):]}" '
                      f'data-sha256="{digest}">\n{js}\n    </script>')
        lic_path, _ = found[LICENCE_FROM[name]]
        (HERE / f"LICENSE.{name}").write_bytes(_member(lic_path, "package/LICENSE"))
        tgz_sha512 = hashlib.sha512(path.read_bytes()).hexdigest()
        rows.append(f"| {name} | {meta['version']} | {meta['license']} | `{member[len('package/'):]}` | "
                    f"`{digest}` | `LICENSE.{name}`" + (" (from vega-typings: the vega package ships none)"
                                                        if LICENCE_FROM[name] != name else "") + " |")
    (HERE / "index.html").write_text(PAGE.format(inline="\n".join(blocks)), encoding="utf-8")
    readme = (HERE / "README.md").read_text(encoding="utf-8").split("<!-- table -->")
    table = ("| package | version | licence | file (inline in index.html) | sha256 of the file | licence text |\n"
             "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    (HERE / "README.md").write_text(readme[0] + "<!-- table -->\n" + table + "<!-- table -->" + readme[2],
                                    encoding="utf-8")
    print(f"wrote {HERE / 'index.html'} ({(HERE / 'index.html').stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(sys.argv[1:])
