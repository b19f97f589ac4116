//! Redis's glob dialect (`KEYS`/`SCAN MATCH`): `*`, `?`, `[abc]`, `[^a-z]`, `\x`, on bytes.

/// True when `text` matches `pattern` the way Redis's `stringmatchlen` decides.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matcher with single-star backtracking: linear in practice, no recursion depth
    // to exhaust on hostile patterns.
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, t));
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, text[t]) {
                        if matched {
                            p = next;
                            t += 1;
                            continue;
                        }
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                c => {
                    if c == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// Matches one byte against the class starting at `pattern[start] == b'['`; returns whether it
/// matched and the index after the class.
fn class_match(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    loop {
        let &b = pattern.get(i)?;
        if b == b']' {
            break;
        }
        if b == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if pattern.get(i + 1) == Some(&b'-')
            && i + 2 < pattern.len()
            && pattern[i + 2] != b']'
        {
            let (lo, hi) = if b <= pattern[i + 2] {
                (b, pattern[i + 2])
            } else {
                (pattern[i + 2], b)
            };
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= b == c;
            i += 1;
        }
    }
    Some((matched != negate, i + 1))
}

#[cfg(test)]
mod tests {
    use super::glob_match as m;

    #[test]
    fn redis_glob_cases() {
        assert!(m(b"*", b""));
        assert!(m(b"user:*", b"user:1"));
        assert!(!m(b"user:*", b"users"));
        assert!(m(b"h?llo", b"hello"));
        assert!(m(b"h[ae]llo", b"hallo"));
        assert!(!m(b"h[^e]llo", b"hello"));
        assert!(m(b"h[a-b]llo", b"hbllo"));
        assert!(m(b"a\\*b", b"a*b"));
        assert!(!m(b"a\\*b", b"axb"));
        assert!(m(b"*a*b*c", b"xxaxxbxxc"));
        assert!(!m(b"*a*b*c", b"xxaxxbxx"));
        assert!(m(b"\xff*", b"\xff\x00"));
    }
}
