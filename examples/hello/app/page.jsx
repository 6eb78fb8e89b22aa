import Counter from "./counter";
import { APP_VERSION } from "./version";

// Rendered per request, so every response shows which build answered.
export const dynamic = "force-dynamic";

export default function Home() {
  return (
    <main>
      <h1>hello from nextdeploy</h1>
      <p>
        build version: <span id="version">{APP_VERSION}</span>
      </p>
      <Counter />
    </main>
  );
}
