"""Samples and checks shared by the code chunker's tests: one source file per language (a class
with a method ``describe`` bigger than a 40-token budget), ``chunk``, and the contract checks in
tokens and in non-whitespace characters.

Test data and assertions only; no tests here (tests/chunkers/test_code_chunker.py).
"""

from __future__ import annotations

import regex

from ragkit.chunkers.code import CodeChunker, NonWhitespaceCounter
from ragkit.types import Document
from tests.contracts.test_chunkers import contract_violations

NWS = NonWhitespaceCounter()

# One sample per language: a class (or its equivalent) with a method `describe` whose body is
# bigger than the 40-token budget used below, and a few small definitions around it.
PY = '''"""Shapes."""
import math


class Shape:
    """A shape."""

    def area(self):
        raise NotImplementedError

    def describe(self, verbose=False):
        name = type(self).__name__
        area = self.area()
        if verbose:
            return f"{name} with area {area:.2f}"
        parts = [name, str(round(area, 2))]
        text = " ".join(parts)
        return text.strip()


def largest(shapes):
    return max(shapes, key=lambda s: s.area())
'''
JS = '''// Shapes.
import { pi } from "./math.js";

class Shape {
  area() {
    throw new Error("not implemented");
  }

  describe(verbose = false) {
    const name = this.constructor.name;
    const area = this.area();
    if (verbose) {
      return `${name} with area ${area.toFixed(2)}`;
    }
    const parts = [name, String(Math.round(area))];
    return parts.join(" ").trim();
  }
}

function largest(shapes) {
  return shapes.reduce((a, b) => (a.area() > b.area() ? a : b));
}
'''
TS = '''// Shapes.
export interface Shape {
  area(): number;
}

export namespace Geometry {
  export class Circle implements Shape {
    constructor(private r: number) {}

    area(): number {
      return Math.PI * this.r * this.r;
    }

    describe(verbose: boolean = false): string {
      const name: string = "circle";
      const area: number = this.area();
      if (verbose) {
        return `${name} with area ${area.toFixed(2)}`;
      }
      const parts: string[] = [name, String(Math.round(area))];
      return parts.join(" ").trim();
    }
  }
}
'''
TSX = '''import React from "react";

export class Panel extends React.Component<{ title: string; items: string[] }> {
  describe(verbose: boolean): JSX.Element {
    const items = this.props.items.map((s) => <li key={s}>{s}</li>);
    const title = <h1 className="title">{this.props.title}</h1>;
    if (verbose) {
      return <div className="panel">{title}<ul>{items}</ul></div>;
    }
    return <div className="panel">{title}</div>;
  }
}
'''
JAVA = '''package shapes;

import java.util.List;

/** A shape. */
public abstract class Shape {
    public abstract double area();

    public String describe(boolean verbose) {
        String name = getClass().getSimpleName();
        double area = area();
        if (verbose) {
            return name + " with area " + String.format("%.2f", area);
        }
        List<String> parts = List.of(name, String.valueOf(Math.round(area)));
        return String.join(" ", parts).trim();
    }
}
'''
GO = '''package shapes

import (
	"fmt"
	"strings"
)

// Circle is a shape.
type Circle struct {
	R float64
}

// Describe the circle.
func (c *Circle) Describe(verbose bool) string {
	name := "circle"
	area := 3.14159 * c.R * c.R
	if verbose {
		return fmt.Sprintf("%s with area %.2f", name, area)
	}
	parts := []string{name, fmt.Sprint(int(area))}
	return strings.TrimSpace(strings.Join(parts, " "))
}
'''
RUST = '''//! Shapes.
use std::f64::consts::PI;

#[derive(Debug, Clone)]
pub struct Circle {
    pub r: f64,
}

impl Circle {
    pub fn describe(&self, verbose: bool) -> String {
        let name = "circle";
        let area = PI * self.r * self.r;
        if verbose {
            return format!("{} with area {:.2}", name, area);
        }
        let parts = vec![name.to_string(), format!("{}", area.round())];
        parts.join(" ").trim().to_string()
    }
}
'''
C = '''/* Shapes. */
#include <math.h>
#include <stdio.h>

struct circle {
    double r;
    const char *name;
};

char *describe(const struct circle *c, int verbose, char *buf, size_t n) {
    double area = M_PI * c->r * c->r;
    const char *name = c->name;
    if (verbose) {
        snprintf(buf, n, "%s with area %.2f", name, area);
        return buf;
    }
    snprintf(buf, n, "%s %ld", name, lround(area));
    return buf;
}
'''
CPP = '''#include <string>

namespace geo {
class Circle : public Shape {
 public:
  explicit Circle(double r) : r_(r) {}

  std::string describe(bool verbose) const {
    std::string name = "circle";
    double a = 3.14159 * r_ * r_;
    if (verbose) {
      return name + " with area " + std::to_string(a);
    }
    return name + " " + std::to_string(static_cast<long>(a));
  }

 private:
  double r_;
};
}  // namespace geo
'''
SAMPLES = {  # language: (file name, source, the scope of chunks inside `describe`)
    "python": ("shapes.py", PY, "class Shape > def describe"),
    "javascript": ("shapes.js", JS, "class Shape > method describe"),
    "typescript": ("shapes.ts", TS, "namespace Geometry > class Circle > method describe"),
    "tsx": ("panel.tsx", TSX, "class Panel > method describe"),
    "java": ("Shapes.java", JAVA, "class Shape > method describe"),
    "go": ("shapes.go", GO, "func (c *Circle) Describe"),
    "rust": ("shapes.rs", RUST, "impl Circle > fn describe"),
    "c": ("shapes.c", C, "function describe"),
    "cpp": ("shapes.cpp", CPP, "namespace geo > class Circle > function describe"),
}


def chunk(text: str, name: str = "x.py", **params) -> list:
    return CodeChunker(**params).chunk(Document(name, text))


def assert_contract(doc: Document, chunks: list, tokenizer: str = "cl100k",
                    size: int | None = None) -> None:
    problems = contract_violations(doc, chunks, tokenizer, size, 0)
    assert not problems, "\n".join(problems[:10])


def assert_nws_contract(doc: Document, chunks: list, size: int) -> None:
    """The contract in non-whitespace characters: offsets, order, coverage and the budget."""
    text = doc.text
    covered = [False] * len(text)
    prev_end = 0
    for c in chunks:
        assert text[c.start : c.end] == c.text and c.text.strip()
        clusters = regex.findall(r"\X", c.text)  # " \u0301" is one cluster: not trimmed
        assert not clusters[0].isspace() and not clusters[-1].isspace()
        assert c.start >= prev_end
        prev_end = c.end
        assert c.metadata["nws_chars"] == NWS.count(c.text) and "tokens" not in c.metadata
        assert NWS.count(c.text) <= size or len(regex.findall(r"\X", c.text)) == 1
        covered[c.start : c.end] = [True] * (c.end - c.start)
    assert all(covered[i] or ch.isspace() for i, ch in enumerate(text))
