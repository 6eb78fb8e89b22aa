import { APP_VERSION } from "../../version";

export const dynamic = "force-dynamic";

export async function GET() {
  return Response.json({ status: "ok", version: APP_VERSION });
}
