"use client";
import { useState } from "react";
import { APP_VERSION } from "./version";

// A client component, so the page ships JavaScript chunks under /_next/static; showing the version makes
// each release's chunks different (what old tabs still request after a deploy).
export default function Counter() {
  const [count, setCount] = useState(0);
  return (
    <button onClick={() => setCount(count + 1)}>
      clicked {count} times (build {APP_VERSION})
    </button>
  );
}
