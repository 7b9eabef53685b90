"""A stand-in for mrmd-python small enough to run hundreds at once: the MRP calls the control plane and
the load benchmark use (capabilities, execute), one Python namespace kept across cells, nothing else.
About 10 MB per process instead of IPython's 60+. Not for users: the runtime image is mrmd-python."""
import ast
import io
import json
import sys
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

namespace = {"__name__": "__main__"}
execution_count = 0

CAPABILITIES = {
    "runtime": "markco-mrp-standin",
    "version": "0.1.0",
    "languages": ["python", "py", "python3"],
    "features": {"execute": True, "executeStream": False, "interrupt": False, "complete": False, "inspect": False,
                 "hover": False, "variables": False, "variableExpand": False, "reset": False, "isComplete": False,
                 "format": False, "assets": False},
    "environment": {"cwd": "/home/user", "executable": sys.executable, "virtualenv": None},
    "lspFallback": None,
}


def execute(code):
    global execution_count
    execution_count += 1
    started = time.monotonic()
    out, err = io.StringIO(), io.StringIO()
    result, error = None, None
    try:
        tree = ast.parse(code, "<cell>", "exec")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        with redirect_stdout(out), redirect_stderr(err):
            exec(compile(tree, "<cell>", "exec"), namespace)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace)
                if value is not None:
                    result = repr(value)
    except Exception as e:  # the cell's own error is the answer, as mrmd-python reports it
        error = {"type": type(e).__name__, "message": str(e), "traceback": traceback.format_exc().splitlines(), "line": None, "column": None}
    return {"success": error is None, "stdout": out.getvalue(), "stderr": err.getvalue(), "result": result, "error": error,
            "displayData": [], "assets": [], "executionCount": execution_count,
            "duration": round((time.monotonic() - started) * 1000), "imports": []}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        if self.path.split("?")[0] == "/mrp/v1/capabilities":
            self.answer(200, CAPABILITIES)
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.split("?")[0] != "/mrp/v1/execute":
            self.answer(404, {"error": "not found"})
            return
        try:
            code = json.loads(raw or b"{}").get("code", "")
        except ValueError:
            self.answer(400, {"error": "expected a JSON body with code"})
            return
        self.answer(200, execute(code))


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8888
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
