// YAML -> CheckpointManagerOptions. The only file that sees yaml-cpp.
//
// yaml-cpp on its own lets through much that is wrong: of two equal keys the
// later wins silently, a quoted string left open takes the rest of the file
// as its text (when a newline ends the file), a second document is ignored,
// as<bool>() takes yes/on, as<int>() reads 010 as octal and a cast wraps
// 2^32 to 0, and an empty value is marked at the next token (often the end
// of the file). So the text is held to more before a field is read: one
// document, plain keys once per mapping, closed quotes (check_node); scalars
// are converted here, not by yaml-cpp (Reader); then every field passes the
// checks validate() makes (validate.h). Each error names source:line: key,
// the line being that of the key (or of the value, when it is a scalar).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string_view>

#include "dcp/error.h"
#include "dcp/manager/options.h"
#include "validate.h"

namespace dcp {
namespace manager {

SavePolicy::SavePolicy() : on_signals{SIGTERM, SIGUSR1} {}

namespace {

// The 1-based line of a mark; 0 when yaml-cpp has none.
int line_of(const YAML::Mark& m) { return m.is_null() || m.line < 0 ? 0 : m.line + 1; }

// The line that errors about `value` name: its own when it is a scalar, else
// its key's (yaml-cpp marks an empty value, and a block collection, where
// the next token is: the next line, or the end of the file). `key` may be
// undefined (list elements); then `fallback` for an empty value.
int line_for(const YAML::Node& key, const YAML::Node& value, int fallback) {
  const int own = value.IsDefined() && !value.IsNull() ? line_of(value.Mark()) : 0;
  if (own && value.IsScalar()) return own;
  const int key_line = key.IsDefined() ? line_of(key.Mark()) : 0;
  return key_line ? key_line : own ? own : fallback;
}

std::string describe(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return "empty";
  if (n.IsMap()) return "a mapping";
  if (n.IsSequence()) return "a list";
  if (n.Tag() == "!") return "the quoted string \"" + n.Scalar() + "\"";
  if (n.Tag() != "?") return "'" + n.Tag() + " " + n.Scalar() + "'";
  return "'" + n.Scalar() + "'";
}

// A value of the document and the dotted key that names it in errors.
struct Field {
  std::string key;  // "checkpoint.keep.last", "checkpoint.save.at_steps[2]"
  YAML::Node node;
  int line = 0;  // 0: unknown
};

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  // source:line: key: what (without a part that is unknown or empty).
  [[noreturn]] void fail(int line, const std::string& key, const std::string& what) const {
    std::string s = source_;
    if (line > 0) s += ":" + std::to_string(line);
    s += ": ";
    if (!key.empty()) s += key + ": ";
    throw ConfigError(s + what);
  }
  [[noreturn]] void fail(const Field& f, const std::string& what) const {
    fail(f.line, f.key, what);
  }

  // The entries of the mapping `f` by name (check_node has made sure keys
  // are plain and unique); a key outside `known` fails. An empty value has
  // no entries when `empty_ok`.
  std::map<std::string, Field> section(const Field& f, const std::set<std::string>& known,
                                       bool empty_ok = false) {
    std::map<std::string, Field> out;
    if (empty_ok && f.node.IsNull()) return out;
    if (!f.node.IsMap())
      fail(f, std::string(f.key.empty() ? "the document " : "") + "must be a mapping, not " +
                  describe(f.node));
    for (const auto& kv : f.node) {
      const std::string name = kv.first.Scalar();
      const std::string key = f.key.empty() ? name : f.key + "." + name;
      if (!known.count(name)) {
        std::string list;
        for (const auto& n : known) list += (list.empty() ? "" : ", ") + n;
        fail(line_for(kv.first, YAML::Node(), f.line), key, "unknown key (known: " + list + ")");
      }
      out[name] = record(key, line_for(kv.first, kv.second, f.line), kv.second);
    }
    return out;
  }

  std::vector<Field> list(const Field& f) {
    if (!f.node.IsSequence()) fail(f, "must be a list, not " + describe(f.node));
    std::vector<Field> out;
    for (const auto& e : f.node) {
      const std::string key = f.key + "[" + std::to_string(out.size()) + "]";
      out.push_back(record(key, line_for(YAML::Node(YAML::NodeType::Undefined), e, f.line), e));
    }
    return out;
  }

  // Plain decimal, within the field's range (validate.h).
  int64_t integer(const Field& f) const {
    const internal::IntRange r = internal::integer_range(f.key);
    const std::string type =
        "an integer (decimal) in " + std::to_string(r.min) + ".." + std::to_string(r.max);
    const std::string s = plain(f, type);
    int64_t v = 0;
    const internal::IntParse p = internal::parse_int64(s, v);
    const size_t sign = s[0] == '+' || s[0] == '-' ? 1 : 0;
    if (p == internal::IntParse::kOk && s.size() > sign + 1 && s[sign] == '0')
      fail(f, "must be " + type + ", not '" + s + "' (a leading 0 is octal in YAML 1.1)");
    if (p == internal::IntParse::kNotInteger) fail(f, "must be " + type + ", not '" + s + "'");
    if (p == internal::IntParse::kOutOfRange || v < r.min || v > r.max)
      fail(f, internal::range_problem(r, s));
    return v;
  }
  // Decimal notation; finite (>= 0 is validate()'s).
  double seconds(const Field& f) const { return number(f, internal::kSecondsType); }
  // Decimal notation, finite; `type` names what the key wants in errors.
  double number(const Field& f, const char* type) const {
    const std::string s = plain(f, type);
    double v = 0;
    if (!internal::parse_decimal(s, v))
      fail(f, std::string("must be ") + type + ", not '" + s + "'");
    return v;
  }
  // `true` or `false` only: yes/no/on/off are strings elsewhere (YAML 1.2).
  bool boolean(const Field& f) const {
    const char* type = "true or false (not yes, no, on or off)";
    const std::string s = plain(f, type);
    if (s != "true" && s != "false") fail(f, std::string("must be ") + type + ", not '" + s + "'");
    return s == "true";
  }
  std::string string(const Field& f) const {
    const std::string& tag = f.node.Tag();
    if (!f.node.IsScalar() || (tag != "?" && tag != "!" && tag != "tag:yaml.org,2002:str"))
      fail(f, "must be a string, not " + describe(f.node));
    return f.node.Scalar();
  }
  std::vector<std::string> strings(const Field& f) {
    std::vector<std::string> out;
    for (const Field& e : list(f)) out.push_back(string(e));
    return out;
  }

  // The line of `key`, or of the nearest enclosing key that was read.
  int line(std::string key) const {
    for (;;) {
      if (auto it = lines_.find(key); it != lines_.end()) return it->second;
      const size_t cut = key.find_last_of(".[");
      if (cut == std::string::npos) return 0;
      key.resize(cut);
    }
  }

 private:
  // A plain scalar's text (not quoted, not tagged, not empty).
  std::string plain(const Field& f, const std::string& type) const {
    if (!f.node.IsScalar() || f.node.Tag() != "?" || f.node.Scalar().empty())
      fail(f, "must be " + type + ", not " + describe(f.node));
    return f.node.Scalar();
  }
  Field record(std::string key, int line, const YAML::Node& node) {
    lines_[key] = line;
    return Field{std::move(key), node, line};
  }

  std::string source_;
  std::map<std::string, int> lines_;
};

// yaml-cpp 0.7 ends a quoted string that is never closed at the end of the
// text when a newline precedes it: look for the closing quote from the
// opening one.
void check_closed(const YAML::Node& n, const std::string& key, std::string_view text,
                  const Reader& r) {
  const YAML::Mark m = n.Mark();
  if (m.is_null() || m.pos < 0) return;
  size_t p = static_cast<size_t>(m.pos);
  const auto space = [&](size_t i) { return std::isspace(static_cast<unsigned char>(text[i])); };
  while (p < text.size() && (text[p] == '!' || text[p] == '&')) {  // a tag or an anchor first
    while (p < text.size() && !space(p)) ++p;
    while (p < text.size() && space(p)) ++p;
  }
  if (p >= text.size() || (text[p] != '"' && text[p] != '\'')) return;
  const char q = text[p];
  for (size_t i = p + 1; i < text.size(); ++i) {
    if (q == '"' && text[i] == '\\') {
      ++i;
    } else if (text[i] == q) {
      if (q == '"' || i + 1 >= text.size() || text[i + 1] != '\'') return;
      ++i;  // '' in a single-quoted string
    }
  }
  r.fail(
      line_of(m), key,
      std::string("a quoted string that starts on this line is not closed (no closing ") + q + ")");
}

// Every mapping at any depth has plain scalar keys, each once (yaml-cpp
// keeps the later of two silently); every quoted scalar is closed.
void check_node(const YAML::Node& n, const std::string& key, int line, std::string_view text,
                const Reader& r) {
  if (n.IsScalar()) return check_closed(n, key, text, r);
  if (n.IsSequence()) {
    size_t i = 0;
    for (const auto& e : n) {
      const YAML::Node none(YAML::NodeType::Undefined);
      check_node(e, key + "[" + std::to_string(i++) + "]", line_for(none, e, line), text, r);
    }
    return;
  }
  if (!n.IsMap()) return;
  std::map<std::string, int> seen;  // key -> its line
  for (const auto& kv : n) {
    const int key_line = line_for(kv.first, YAML::Node(), line);
    if (!kv.first.IsScalar())
      r.fail(key_line, key, "a key must be a plain name, not " + describe(kv.first));
    const std::string name = kv.first.Scalar();
    const std::string child = key.empty() ? name : key + "." + name;
    check_closed(kv.first, child, text, r);
    const auto [first, fresh] = seen.emplace(name, key_line);
    if (!fresh)
      r.fail(key_line, child,
             "duplicate key (first on line " + std::to_string(first->second) +
                 "); a key may appear once in a mapping");
    check_node(kv.second, child, line_for(kv.first, kv.second, key_line), text, r);
  }
}

// The lines (1-based) of the document markers --- and ... in `text`.
std::vector<int> marker_lines(std::string_view text) {
  std::vector<int> out;
  int line = 1;
  for (size_t i = 0; i <= text.size(); ++line) {
    size_t end = text.find('\n', i);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view l = text.substr(i, end - i);
    if ((l.substr(0, 3) == "---" || l.substr(0, 3) == "...") &&
        (l.size() == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\r'))
      out.push_back(line);
    i = end + 1;
  }
  return out;
}

// Where the second of `docs` starts: the marker before its first node, or
// (an empty document) the first marker after the first document's node.
int second_document_line(std::string_view text, const std::vector<YAML::Node>& docs) {
  const int first = docs[0].IsNull() ? 0 : line_of(docs[0].Mark());
  const int second = docs[1].IsNull() ? 0 : line_of(docs[1].Mark());
  int line = second;
  for (int m : marker_lines(text)) {
    if (second && m <= second) line = m;
    if (!second && m > first) return m;
  }
  return line;
}

// yaml-cpp reports an unclosed quote or bracket where the text ends. It
// starts on the line after the longest prefix of whole lines that does not
// fail the same way (searched from the end; configs are small).
int start_of_unclosed(const std::string& text, const std::string& msg, int fallback) {
  std::vector<size_t> ends;  // where each line's newline is
  for (size_t i = text.find('\n'); i != std::string::npos; i = text.find('\n', i + 1))
    ends.push_back(i);
  if (ends.size() > 5000) return fallback;
  size_t k = ends.size();  // a prefix of k lines, without the last newline
  for (; k > 0; --k) {
    try {
      YAML::LoadAll(text.substr(0, ends[k - 1]));
      break;
    } catch (const YAML::Exception& e) {
      if (e.msg != msg) break;
    }
  }
  return static_cast<int>(k) + 1;
}

YAML::Node load_document(const std::string& text, const Reader& r) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    int line = line_of(e.mark);
    std::string hint;
    if (e.msg == YAML::ErrorMsg::EOF_IN_SCALAR) {
      hint = " (a quoted string that starts on this line is not closed)";
    } else if (e.msg == YAML::ErrorMsg::END_OF_SEQ_FLOW ||
               e.msg == YAML::ErrorMsg::END_OF_MAP_FLOW) {
      hint = " (a [ or { on this line is not closed)";
    }
    if (!hint.empty()) line = start_of_unclosed(text, e.msg, line);
    r.fail(line, "", "not valid YAML: " + e.msg + hint);
  }
  if (docs.size() > 1)
    r.fail(second_document_line(text, docs), "",
           "a second YAML document starts here (after --- or ...); a checkpoint config is one "
           "document");
  return docs.empty() ? YAML::Node() : docs[0];
}

const Field* get(const std::map<std::string, Field>& m, const char* name) {
  auto it = m.find(name);
  return it == m.end() ? nullptr : &it->second;
}

void read_save(Reader& r, const Field& f, SavePolicy& s) {
  const auto m = r.section(f, {"every_steps", "every_seconds", "at_steps", "at_end", "on_signals",
                               "max_overhead", "mtbf_seconds"});
  if (auto* x = get(m, "max_overhead")) s.max_overhead = r.number(*x, internal::kFractionType);
  if (auto* x = get(m, "mtbf_seconds")) s.mtbf_seconds = r.number(*x, internal::kMtbfType);
  // A budget picks the interval: every_steps is off unless given.
  if (s.max_overhead > 0 || s.mtbf_seconds > 0) s.every_steps = 0;
  if (auto* x = get(m, "every_steps")) s.every_steps = r.integer(*x);
  if (auto* x = get(m, "every_seconds")) s.every_seconds = r.seconds(*x);
  if (auto* x = get(m, "at_steps")) {
    s.at_steps.clear();
    for (const Field& e : r.list(*x)) s.at_steps.push_back(r.integer(e));
  }
  if (auto* x = get(m, "at_end")) s.at_end = r.boolean(*x);
  if (auto* x = get(m, "on_signals")) {
    s.on_signals.clear();
    for (const Field& e : r.list(*x)) {
      const std::string name = r.string(e);
      try {
        s.on_signals.push_back(signal_from_name(name));
      } catch (const ConfigError& err) {
        r.fail(e, err.what());
      }
    }
  }
}

void read_async(Reader& r, const Field& f, AsyncPolicy& a) {
  const auto m = r.section(f, {"enabled", "max_in_flight", "direct_io", "writer_threads"});
  if (auto* x = get(m, "enabled")) a.enabled = r.boolean(*x);
  if (auto* x = get(m, "max_in_flight")) a.max_in_flight = static_cast<int>(r.integer(*x));
  if (auto* x = get(m, "direct_io")) a.direct_io = r.boolean(*x);
  if (auto* x = get(m, "writer_threads")) a.writer_threads = static_cast<int>(r.integer(*x));
}

void read_keep(Reader& r, const Field& f, KeepPolicy& k) {
  const auto m = r.section(f, {"last", "every_steps", "every_seconds", "best"});
  if (auto* x = get(m, "last")) k.last = static_cast<int>(r.integer(*x));
  if (auto* x = get(m, "every_steps")) k.every_steps = r.integer(*x);
  if (auto* x = get(m, "every_seconds")) k.every_seconds = r.seconds(*x);
  if (auto* best = get(m, "best")) {
    const auto b = r.section(*best, {"metric", "mode", "count"});
    if (auto* x = get(b, "metric")) k.best.metric = r.string(*x);
    if (auto* x = get(b, "mode")) {
      const std::string mode = r.string(*x);
      if (mode != "min" && mode != "max") r.fail(*x, "must be min or max, not '" + mode + "'");
      k.best.maximize = mode == "max";
    }
    if (auto* x = get(b, "count")) k.best.count = static_cast<int>(r.integer(*x));
  }
}

void read_resume(Reader& r, const Field& f, ResumePolicy& p) {
  const auto m =
      r.section(f, {"from", "strict", "exclude", "fallback_to_older", "rename", "skip_unreadable"});
  if (auto* x = get(m, "from")) p.from = r.string(*x);
  if (auto* x = get(m, "strict")) p.strict = r.boolean(*x);
  if (auto* x = get(m, "exclude")) p.exclude = r.strings(*x);
  if (auto* x = get(m, "fallback_to_older")) p.fallback_to_older = r.boolean(*x);
  if (auto* x = get(m, "rename"))
    for (const Field& e : r.list(*x)) {
      const auto rule = r.section(e, {"from", "to"});
      const Field* from = get(rule, "from");
      const Field* to = get(rule, "to");
      if (!from || !to) r.fail(e, "a rule needs both from and to (\"\" for none)");
      p.rename.push_back(KeyRename{r.string(*from), r.string(*to)});
    }
  if (auto* x = get(m, "skip_unreadable")) p.skip_unreadable = r.boolean(*x);
}

void read_storage(Reader& r, const Field& f, StoragePolicy& s) {
  const auto m = r.section(
      f, {"threads", "fsync", "verify_checksums", "check_replicas", "format", "pytorch_version"});
  if (auto* x = get(m, "threads")) s.threads = static_cast<int>(r.integer(*x));
  if (auto* x = get(m, "fsync")) s.fsync = r.boolean(*x);
  if (auto* x = get(m, "verify_checksums")) s.verify_checksums = r.boolean(*x);
  if (auto* x = get(m, "check_replicas")) {
    const std::string v = r.string(*x);
    try {
      s.check_replicas = replica_check_from_name(v);
    } catch (const InvalidArgumentError&) {
      r.fail(*x, "must be error, warn or off, not '" + v + "'");
    }
  }
  if (auto* x = get(m, "format")) {
    const std::string v = r.string(*x);
    try {
      s.format = storage_format_from_name(v);
    } catch (const InvalidArgumentError&) {
      r.fail(*x, "must be dcp++ or pytorch-dcp, not '" + v + "'");
    }
  }
  // "2" or "1.13", quoted or not (YAML would read the plain 1.13 as a number).
  if (auto* x = get(m, "pytorch_version")) s.pytorch_version = r.string(*x);
}

CheckpointManagerOptions read_options(const YAML::Node& root, Reader& r) {
  CheckpointManagerOptions o;
  const auto top = r.section(Field{"", root, line_of(root.Mark())}, {"checkpoint"}, true);
  const Field* c = get(top, "checkpoint");
  if (!c) return o;
  const auto m =
      r.section(*c, {"dir", "save", "async", "keep", "resume", "storage", "log", "on_error"},
                /*empty_ok=*/true);
  if (auto* x = get(m, "dir")) o.dir = r.string(*x);
  if (auto* x = get(m, "save")) read_save(r, *x, o.save);
  if (auto* x = get(m, "async")) read_async(r, *x, o.async);
  if (auto* x = get(m, "keep")) read_keep(r, *x, o.keep);
  if (auto* x = get(m, "resume")) read_resume(r, *x, o.resume);
  if (auto* x = get(m, "storage")) read_storage(r, *x, o.storage);
  if (auto* x = get(m, "log")) {
    const auto l = r.section(*x, {"level"});
    if (auto* y = get(l, "level")) o.log.level = r.string(*y);
  }
  if (auto* x = get(m, "on_error")) {
    const std::string v = r.string(*x);
    if (v != "raise" && v != "warn") r.fail(*x, "must be raise or warn, not '" + v + "'");
    o.on_error = v == "raise" ? OnError::kRaise : OnError::kWarn;
  }
  return o;
}

// The whole file, refused unless it is a readable regular file.
std::string read_config_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO does not wait for a writer (it is refused below).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    throw ConfigError("cannot read checkpoint config '" + path + "': " + std::strerror(errno));
  struct stat st {};
  std::string what;
  if (::fstat(fd, &st) != 0)
    what = std::strerror(errno);
  else if (S_ISDIR(st.st_mode))
    what = "is a directory, not a file";
  else if (!S_ISREG(st.st_mode))
    what = "is not a regular file";
  std::string text;
  char buf[65536];
  while (what.empty()) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) what = std::string("cannot read it: ") + std::strerror(errno);
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (!what.empty()) throw ConfigError("checkpoint config '" + path + "' " + what);
  return text;
}

}  // namespace

CheckpointManagerOptions parse_manager_options(const std::string& yaml, const std::string& source) {
  Reader r(source);
  // Without a UTF-8 byte order mark, yaml-cpp's positions are offsets into
  // `text`. A final newline changes nothing in YAML; with it, a quote left
  // open is found by check_closed, which names its key, rather than by
  // yaml-cpp at the end of the text.
  std::string text = yaml.compare(0, 3, "\xEF\xBB\xBF") == 0 ? yaml.substr(3) : yaml;
  if (!text.empty() && text.back() != '\n') text += '\n';
  const YAML::Node root = load_document(text, r);
  check_node(root, "", line_of(root.Mark()), text, r);
  CheckpointManagerOptions o = read_options(root, r);
  internal::validate(o, [&](const std::string& key, const std::string& problem) {
    r.fail(r.line(key), key, problem);
  });
  return o;
}

void apply_environment(CheckpointManagerOptions& o) {
  const auto check = [](const char* var, const char* key, const std::string& problem) {
    if (!problem.empty()) throw ConfigError(std::string("$") + var + ": " + key + ": " + problem);
  };
  if (const char* d = std::getenv("DCP_CHECKPOINT_DIR"); d && *d) {
    check("DCP_CHECKPOINT_DIR", "checkpoint.dir", internal::dir_problem(d));
    o.dir = d;
  }
  if (const char* f = std::getenv("DCP_RESUME_FROM"); f && *f) {
    check("DCP_RESUME_FROM", "checkpoint.resume.from", internal::resume_from_problem(f));
    o.resume.from = f;
  }
  if (const char* l = std::getenv("DCP_LOG_LEVEL"); l && *l) {
    check("DCP_LOG_LEVEL", "checkpoint.log.level", internal::log_level_problem(l));
    o.log.level = l;
  }
}

CheckpointManagerOptions load_manager_options(const std::string& path) {
  CheckpointManagerOptions o = parse_manager_options(read_config_file(path), path);
  apply_environment(o);
  return o;
}

}  // namespace manager
}  // namespace dcp
