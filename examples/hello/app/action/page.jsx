import { redirect } from "next/navigation";

// A Server Action in a form that works without JavaScript. The action closes over `prefix`, so Next
// encrypts that value into the form: a form rendered by one release submits to the next only when both
// were built and run with the same NEXT_SERVER_ACTIONS_ENCRYPTION_KEY (nextdeploy keeps it stable).
export const dynamic = "force-dynamic";

export default async function ActionPage({ searchParams }) {
  const { said } = await searchParams;
  const prefix = "echo";
  async function echo(formData) {
    "use server";
    redirect(`/action?said=${encodeURIComponent(`${prefix}: ${formData.get("text") ?? ""}`)}`);
  }
  return (
    <main>
      <form action={echo}>
        <input name="text" defaultValue="hello" />
        <button type="submit">send</button>
      </form>
      {said ? <p id="said">{said}</p> : null}
    </main>
  );
}
