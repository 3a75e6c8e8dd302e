package net.lag.kestrel.client;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A strict JSON reader (RFC 8259), just enough for server-set member data. The JDK has none, and
 * one small class keeps the client's classpath to Thrift and ZooKeeper. Objects become
 * {@code Map<String, Object>}, arrays {@code List<Object>}, numbers {@code BigDecimal}.
 */
final class Json {
  private static final Pattern NUMBER = Pattern.compile("-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?");

  private final String text;
  private int at;

  private Json(String text) {
    this.text = text;
  }

  /** The value {@code text} holds; throws IllegalArgumentException if it is not valid JSON. */
  static Object parse(String text) {
    Json json = new Json(text);
    json.space();
    Object value = json.value();
    json.space();
    if (json.at != text.length()) {
      throw json.fail("trailing characters");
    }
    return value;
  }

  private IllegalArgumentException fail(String what) {
    return new IllegalArgumentException("invalid JSON at offset " + at + ": " + what);
  }

  private void space() {
    while (at < text.length() && " \t\r\n".indexOf(text.charAt(at)) >= 0) {
      at++;
    }
  }

  private void expect(char c) {
    if (at >= text.length() || text.charAt(at) != c) {
      throw fail("expected '" + c + "'");
    }
    at++;
  }

  private boolean skip(char c) {
    if (at < text.length() && text.charAt(at) == c) {
      at++;
      return true;
    }
    return false;
  }

  private Object value() {
    if (at >= text.length()) {
      throw fail("unexpected end");
    }
    char c = text.charAt(at);
    switch (c) {
      case '{': return object();
      case '[': return array();
      case '"': return string();
      case 't': return literal("true", Boolean.TRUE);
      case 'f': return literal("false", Boolean.FALSE);
      case 'n': return literal("null", null);
      default: return number();
    }
  }

  private Object literal(String word, Object value) {
    if (!text.startsWith(word, at)) {
      throw fail("unexpected character");
    }
    at += word.length();
    return value;
  }

  private Object number() {
    Matcher m = NUMBER.matcher(text).region(at, text.length());
    if (!m.lookingAt()) {
      throw fail("unexpected character");
    }
    at = m.end();
    return new BigDecimal(m.group());
  }

  private Map<String, Object> object() {
    at++;
    Map<String, Object> map = new LinkedHashMap<>();
    space();
    if (skip('}')) {
      return map;
    }
    do {
      space();
      if (at >= text.length() || text.charAt(at) != '"') {
        throw fail("expected a key");
      }
      String key = string();
      space();
      expect(':');
      space();
      map.put(key, value());
      space();
    } while (skip(','));
    expect('}');
    return map;
  }

  private List<Object> array() {
    at++;
    List<Object> list = new ArrayList<>();
    space();
    if (skip(']')) {
      return list;
    }
    do {
      space();
      list.add(value());
      space();
    } while (skip(','));
    expect(']');
    return list;
  }

  private String string() {
    at++;
    StringBuilder out = new StringBuilder();
    while (true) {
      if (at >= text.length()) {
        throw fail("unterminated string");
      }
      char c = text.charAt(at++);
      if (c == '"') {
        return out.toString();
      }
      if (c < 0x20) {
        throw fail("control character in a string");
      }
      if (c != '\\') {
        out.append(c);
        continue;
      }
      if (at >= text.length()) {
        throw fail("unterminated string");
      }
      char e = text.charAt(at++);
      switch (e) {
        case '"': case '\\': case '/': out.append(e); break;
        case 'b': out.append('\b'); break;
        case 'f': out.append('\f'); break;
        case 'n': out.append('\n'); break;
        case 'r': out.append('\r'); break;
        case 't': out.append('\t'); break;
        case 'u':
          if (at + 4 > text.length() || !text.substring(at, at + 4).matches("[0-9a-fA-F]{4}")) {
            throw fail("bad \\u escape");
          }
          out.append((char) Integer.parseInt(text.substring(at, at + 4), 16));
          at += 4;
          break;
        default: throw fail("bad escape");
      }
    }
  }
}
