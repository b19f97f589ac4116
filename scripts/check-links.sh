#!/usr/bin/env bash
# Checks the relative links of every Markdown file in the repository: `[text](path)` and
# `[text](path#anchor)` must name a file or directory that exists (relative to the file), and an
# anchor into a Markdown file must be one of its headings (GitHub's rule: lower case, spaces to
# `-`, punctuation other than `-` and `_` dropped). Links to http(s)/mailto are not checked.
# Bash, grep and sed only; run by scripts/test. Exits 1 listing every broken link.
#
#   scripts/check-links.sh [FILE.md...]     # default: every *.md under git (README.md, docs/, ...)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if (($#)); then
    files=("$@")
else
    mapfile -t files < <(git ls-files --cached --others --exclude-standard '*.md' 2>/dev/null || find . -name '*.md' -not -path './target/*' -not -path './.cache/*')
fi

# anchors FILE: the anchor of every heading of FILE, one a line.
anchors() {
    grep -E '^#{1,6} ' "$1" | sed -E 's/^#+ +//; s/ +$//' | tr 'A-Z' 'a-z' |
        sed -E 's/[^a-z0-9 _-]//g; s/ /-/g'
}

broken=0
for f in "${files[@]}"; do
    dir=$(dirname "$f")
    # Every inline link target; code blocks are not told apart, so a link written in one is
    # checked too.
    while IFS= read -r target; do
        case "$target" in
            http://* | https://* | mailto:*) continue ;;
        esac
        path=${target%%#*}
        anchor=
        [[ "$target" == *"#"* ]] && anchor=${target#*#}
        if [[ -z "$path" ]]; then
            dest=$f
        else
            dest="$dir/$path"
        fi
        if [[ ! -e "$dest" ]]; then
            echo "check-links: $f: link to $target: $dest does not exist" >&2
            broken=1
            continue
        fi
        if [[ -n "$anchor" && "$dest" == *.md ]] && ! anchors "$dest" | grep -qxF -- "$anchor"; then
            echo "check-links: $f: link to $target: no heading with the anchor #$anchor in $dest" >&2
            broken=1
        fi
    done < <(grep -oE '\]\([^) ]+\)' "$f" | sed -E 's/^\]\(//; s/\)$//')
done
if ((broken)); then
    exit 1
fi
echo "check-links: every relative link of ${#files[@]} Markdown files resolves"
