// The photos a customer sent, in their message's bubble: thumbnails loaded from
// GET /admin/images/{id} (the console's sign-in cookie; `Cache-Control: private`), the
// vision model's description as the alt text and under the photo, a click (or Enter)
// opening the full image over the page (Escape, the close button or a click beside it
// closes it). Nothing is fetched from anywhere else.
import { useEffect, useRef, useState } from "preact/hooks";
import { t } from "../i18n";
import type { ImageRef } from "./types";

/** The image store's route for one photo. */
export function photoUrl(id: string): string {
  return `/admin/images/${encodeURIComponent(id)}`;
}

/** What a photo is, in words: the model's description, else its kind and size. */
function label(img: ImageRef): string {
  return img.description?.trim() || t("ib.photo_plain", { kind: (img.kind || "").toUpperCase(), w: img.width, h: img.height });
}

/** The thumbnails of one message. */
export function Photos(props: { images: ImageRef[] }) {
  const [open, setOpen] = useState<ImageRef | null>(null);
  return (
    <div class="ib-photos" data-testid="inbox-photos">
      {props.images.map((img) => (
        <figure class="ib-photo">
          <button type="button" class="ib-thumb" aria-label={t("ib.photo_open", { what: label(img) })} onClick={() => setOpen(img)}>
            <img src={photoUrl(img.id)} alt={label(img)} loading="lazy" width={img.width} height={img.height} data-testid="inbox-photo" />
          </button>
          {img.description ? <figcaption>{img.description}</figcaption> : null}
        </figure>
      ))}
      {open ? <PhotoViewer image={open} onClose={() => setOpen(null)} /> : null}
    </div>
  );
}

/** One photo over the page, as large as the screen allows. */
function PhotoViewer(props: { image: ImageRef; onClose: () => void }) {
  const close = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    close.current?.focus();
    const esc = (e: KeyboardEvent) => e.key === "Escape" && props.onClose();
    addEventListener("keydown", esc);
    return () => removeEventListener("keydown", esc);
  }, []);
  const img = props.image;
  return (
    <div class="overlay ib-viewer" onClick={(e) => e.target === e.currentTarget && props.onClose()}>
      <div role="dialog" aria-modal="true" aria-label={t("ib.photo")} class="ib-viewer-box" data-testid="inbox-photo-viewer">
        <img src={photoUrl(img.id)} alt={label(img)} />
        <div class="ib-viewer-bar">
          <span>{label(img)}</span>
          <a href={photoUrl(img.id)} target="_blank" rel="noopener">
            {t("ib.photo_tab")}
          </a>
          <button type="button" ref={close} onClick={props.onClose}>
            {t("ib.photo_close")}
          </button>
        </div>
      </div>
    </div>
  );
}
