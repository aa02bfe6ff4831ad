use std::time::Instant;
fn main() {
    let text: String = std::fs::read_to_string("tests/data/pii.jsonl").unwrap().lines().take(60).map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string()+"\n").collect();
    let pats: Vec<(&str, &str)> = vec![
      ("email", r"(?i)[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}"),
      ("intl", r"\+[0-9]{1,3}(?:[ .-]?\(?[0-9]{1,5}\)?){2,6}"),
      ("card", r"[0-9](?:[ -]?[0-9]){12,18}"),
      ("iban", r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}"),
      ("nino", r"([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]"),
      ("ipv6", r"(?i)[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}"),
      ("token", r"[A-Za-z0-9+/_-]{24,}={0,2}"),
      ("assigned", r#"(?i)(?:api[_-]?key|apikey|secret|token|passw(?:or)?d|pwd|access[_-]?key|auth[_-]?key|private[_-]?key|client[_-]?secret)[A-Za-z0-9_-]*["']?[ \t\r\n]*(?:[:=]|=>|(?-u:\b)is(?-u:\b))[ \t\r\n]*["']?([^ \t\r\n"'`,;]{8,})"#),
      ("word", r"(?i)(?-u:\b)(?:phone|tel|telephone|mobile|cell|call(?: me)?(?: on| at)?|fax|whatsapp|ring me on)(?-u:\b)[:.]?[ \t\r\n]*(?:no\.?|number|nr\.?)?[:.]?[ \t\r\n]*(\(?[0-9][0-9 ()-]{7,16}[0-9])"),
    ];
    println!("{} bytes", text.len());
    for (n, p) in pats { let r = regex::Regex::new(p).unwrap(); let t = Instant::now(); let mut c = 0; for _ in 0..200 { c += r.find_iter(&text).count(); } println!("{n}: {:.1} us ({c})", t.elapsed().as_secs_f64()*1e6/200.0); }
    let t = Instant::now(); for _ in 0..200 { std::hint::black_box(switchyard::pii::find(&text)); } println!("all: {:.1} us", t.elapsed().as_secs_f64()*1e6/200.0);
}
