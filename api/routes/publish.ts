import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import mime from 'mime-types';
import { escapeHtml, page } from '../html.js';
import { requireUser } from '../auth.js';
import type { PlatformDeps } from '../platform.js';
import { parsePublishPath } from '../publish/fsml.js';
import { matchesIfNoneMatch, strongEtag } from '../publish/http-cache.js';
import type { Visibility } from '../publish/project-config.js';
import type { PublishedProject } from '../publish/publisher.js';

/**
 * Published projects at `/@<username>/<project>/<path...>` (issue 8), read-only and CDN-ready: strong
 * ETags and 304s, Cache-Control by visibility, `_assets/` immutable when the URL carries the content hash,
 * sitemaps of public projects. `/@<userId>/...` answers 301 to the username form.
 *
 * A private project is for its owner and the collaborators they invited (the same people who may open
 * the owner's editor). Everyone else gets the very 404 a missing project gets, same status, headers and
 * body: a 403 would tell strangers that a private project of that name exists.
 */
const notFoundHtml = page({
  title: 'Not found',
  body: '<h1>Not found</h1><p>There is no published page at this address.</p><p>If it is a private page shared with you, <a href="/login">sign in</a> first.</p>',
});

const immutable = 'public, max-age=31536000, immutable';

/** Published pages run no script of their own: only the mrmd reader, when one is configured. */
export function contentSecurityPolicy(readerScriptUrl: string | null): string {
  const scriptSrc = readerScriptUrl === null ? "'none'" : /^https?:\/\//.test(readerScriptUrl) ? new URL(readerScriptUrl).origin : "'self'";
  return [
    "default-src 'none'",
    "img-src 'self' data: https:",
    // KaTeX positions glyphs with style attributes.
    "style-src 'self' 'unsafe-inline'",
    "font-src 'self'",
    `script-src ${scriptSrc}`,
    ...(readerScriptUrl === null ? [] : ["connect-src 'self'"]),
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'self'",
  ].join('; ');
}

/** Assets are the user's files: on our origin they must never run as a page (an HTML or SVG file opened directly). */
const assetPolicy = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox";

export function publishRoutes(deps: PlatformDeps): FastifyPluginAsync {
  const { publisher, pageMaxAgeSeconds, readerScriptUrl } = deps.publishing;
  const pagePolicy = contentSecurityPolicy(readerScriptUrl);

  function notFound(reply: FastifyReply) {
    return reply.code(404).header('cache-control', 'no-store').type('text/html; charset=utf-8').send(notFoundHtml);
  }

  /** Cache-Control and robots headers of everything a project serves, by its visibility. */
  function visibilityHeaders(reply: FastifyReply, visibility: Visibility, cacheControl: string) {
    if (visibility === 'private') {
      // Shown per session: a shared cache must neither keep it nor answer another visitor with it.
      reply.header('cache-control', cacheControl === immutable ? 'private, max-age=31536000, immutable' : 'private, no-cache').header('vary', 'Cookie');
    } else reply.header('cache-control', cacheControl);
    if (visibility !== 'public') reply.header('x-robots-tag', 'noindex');
  }

  async function mayView(req: FastifyRequest, project: PublishedProject): Promise<boolean> {
    const visibility = project.publish?.visibility;
    if (visibility === 'public' || visibility === 'unlisted') return true;
    if (visibility !== 'private') return false;
    const signedIn = await deps.auth.sessionOf(req.headers);
    if (!signedIn) return false;
    if (signedIn.user.id === project.ownerId) return true;
    return (await deps.collaborators.grantOf(project.ownerId, signedIn.user.id)) !== undefined;
  }

  function sendValidated(req: FastifyRequest, reply: FastifyReply, etag: string, body: () => unknown) {
    reply.header('etag', etag);
    if (matchesIfNoneMatch(req.headers['if-none-match'], etag)) return reply.code(304).send();
    return reply.send(body());
  }

  function sitemap(urls: { url: string; lastModified: Date | null }[]): string {
    const entries = urls.map((u) => `<url><loc>${escapeHtml(u.url)}</loc>${u.lastModified ? `<lastmod>${u.lastModified.toISOString().slice(0, 10)}</lastmod>` : ''}</url>`);
    return `<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n${entries.join('\n')}\n</urlset>\n`;
  }

  const publishedPage = async (req: FastifyRequest, reply: FastifyReply) => {
    const parsed = parsePublishPath(req.url);
    if (!parsed.ok) {
      if (parsed.reason === 'malformed') return reply.code(400).header('cache-control', 'no-store').send({ error: 'bad request', message: 'the address has malformed percent-encoding' });
      return notFound(reply);
    }
    const [pathPart, query] = splitQuery(req.url);
    // Raw (still encoded) path segments after `/@`: redirects keep the rest of the address as it came.
    const rawSegments = pathPart.slice(2).split('/');
    const owner = await publisher.owner(parsed.user);
    if (!owner) return notFound(reply);
    if ('redirectTo' in owner) {
      // User ids keep working, but the address people share carries the name.
      const rest = pathPart.slice(2 + rawSegments[0]!.length);
      return reply.header('cache-control', 'public, max-age=3600').redirect(`/@${encodeURIComponent(owner.redirectTo)}${rest}${query}`, 301);
    }
    if (!parsed.project) return notFound(reply);

    if (parsed.project.toLowerCase() === 'sitemap.xml' && parsed.rest.length === 0) {
      const projects = (await publisher.projectsOf(owner.user)).filter((p) => p.publish?.visibility === 'public');
      const urls = (await Promise.all(projects.map((p) => publisher.pageList(p)))).flat();
      return reply.header('cache-control', 'public, max-age=300').type('application/xml; charset=utf-8').send(sitemap(urls));
    }

    const hit = await publisher.project(owner.user, parsed.project);
    if (!hit || !(await mayView(req, hit.project))) return notFound(reply);
    const project = hit.project;
    const visibility = project.publish!.visibility;
    if (!hit.canonical || (parsed.rest.length === 0 && !parsed.trailingSlash)) {
      // The project's own address ends with a slash; a folder name stands for the project's `url`.
      const rest = rawSegments.slice(2).join('/');
      visibilityHeaders(reply, visibility, 'public, max-age=300');
      return reply.redirect(`${project.base}/${rest}${query}`, 301);
    }

    const [first, ...afterFirst] = parsed.rest;
    if (first === '_assets') {
      const asset = await publisher.asset(project, afterFirst);
      if (!asset) return notFound(reply);
      const versioned = new URLSearchParams(query.slice(1)).get('v') === asset.hash;
      const contentType = mime.contentType(asset.name) || 'application/octet-stream';
      visibilityHeaders(reply, visibility, versioned ? immutable : 'public, max-age=0, must-revalidate');
      reply
        .header('content-type', contentType)
        .header('x-content-type-options', 'nosniff')
        .header('content-security-policy', assetPolicy)
        .header('last-modified', asset.mtime.toUTCString());
      const etag = strongEtag(asset.hash);
      reply.header('etag', etag);
      const unchanged = matchesIfNoneMatch(req.headers['if-none-match'], etag);
      if (unchanged || req.method === 'HEAD') {
        await asset.handle.close();
        if (!unchanged) reply.header('content-length', asset.size);
        return reply.code(unchanged ? 304 : 200).send();
      }
      return reply.header('content-length', asset.size).send(asset.handle.createReadStream({ start: 0 }));
    }

    if (parsed.rest.length === 1 && first!.toLowerCase() === 'sitemap.xml') {
      if (visibility !== 'public') return notFound(reply);
      return reply.header('cache-control', 'public, max-age=300').type('application/xml; charset=utf-8').send(sitemap(await publisher.pageList(project)));
    }

    const rendered = await publisher.page(project, parsed.rest);
    if (!rendered) return notFound(reply);
    visibilityHeaders(reply, visibility, `public, max-age=${pageMaxAgeSeconds}, must-revalidate`);
    reply.header('content-type', 'text/html; charset=utf-8').header('content-security-policy', pagePolicy).header('x-content-type-options', 'nosniff');
    return sendValidated(req, reply, rendered.etag, () => rendered.body);
  };

  return async (app) => {
    app.get('/@:user', publishedPage);
    app.get('/@:user/*', publishedPage);

    // The pages' stylesheet and KaTeX's fonts, content-addressed.
    app.get('/_publish/:version/*', async (req, reply) => {
      const { version, '*': name } = req.params as { version: string; '*': string };
      if (`/_publish/${version}/` !== publisher.assets.base) return notFound(reply);
      const file = await publisher.assets.read(name);
      if (!file) return notFound(reply);
      reply.header('cache-control', immutable).header('content-type', file.contentType).header('x-content-type-options', 'nosniff');
      return sendValidated(req, reply, strongEtag(version), () => file.body);
    });

    // The signed-in user's projects with an mrmd.md: where each is published, how, and what its config got wrong.
    app.get('/api/published', { preHandler: requireUser(deps.auth) }, async (req) => {
      const projects = await publisher.projectsOf(req.user!);
      return {
        projects: projects.map((p) => ({
          project: p.dirName,
          published: p.publish !== null,
          url: p.publish ? `${deps.signIn.publicUrl}${p.base}/` : null,
          visibility: p.publish?.visibility ?? null,
          domain: p.publish?.domain ?? null,
          problems: p.config.problems,
        })),
      };
    });
  };
}

function splitQuery(url: string): [string, string] {
  const at = url.indexOf('?');
  return at < 0 ? [url, ''] : [url.slice(0, at), url.slice(at)];
}
